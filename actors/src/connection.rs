//! The connection actor: one per socket, child of its listener (temporary).
//!
//! Owns the socket (through a reader task and the writer task of its
//! [`Outbound`]) and the [`Channel`]. The reader decodes frames and hands them
//! over in batches; the actor runs `Channel::handle_in` and carries out the
//! effects: PUBLISH is routed inline (no actor hop), session work goes to the
//! session actor, replies are encoded into the outbound buffer.
//!
//! Bounded: the reader may have at most `READ_BATCHES_IN_FLIGHT` batches
//! waiting in the actor's mailbox (a semaphore), so a fast publisher cannot
//! grow the mailbox; it is slowed down by TCP instead.
//!
//! Local-only message type: never serialized, never mirrored to peers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use roost_protocol::channel::{Channel, ChannelState, ConnectInfo, Effect};
use roost_protocol::codec::{self, DecodeError};
use roost_protocol::packet::{reason, ConnAck, Disconnect, Packet, ProtocolVersion, QoS};
use roost_protocol::ClientId;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn, Instrument, Span};

use crate::broker::{publish_with, BrokerConfig, BrokerCtx, Counters};
use crate::outbound::Outbound;
use crate::rate_limit::{tokio_now, PublishLimiter};
use crate::registry::{OpenRequest, RegistryMsg};
use crate::router::Congested;
use crate::session::{Closed, SessionMsg};
use crate::AbortOnDrop;

const READ_BATCHES_IN_FLIGHT: usize = 4;
const MAX_BATCH: usize = 256;
/// Opening a session (registry, takeover) must not hang a connection.
const OPEN_TIMEOUT_MS: u64 = 10_000;
/// Re-check interval after a silence timeout the actor did not act on.
const IDLE_RECHECK_MS: u64 = 100;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;

pub enum ConnectionMsg {
    /// Decoded packets from the reader task.
    /// Decoded packets, their size in bytes, and the read permit.
    Packets(Vec<Packet>, u32, OwnedSemaphorePermit),
    /// The reader stopped: end of stream (None) or a decode error.
    ReadClosed(Option<DecodeError>),
    /// The outbound side flushed and shut the socket down, or failed.
    WriterDone(Option<std::io::Error>),
    /// No complete packet within the silence limit (handshake timeout
    /// before CONNECT, keep alive x multiplier after).
    IdleTimeout,
    /// Close with a reason (takeover, shutdown, overflow, admin kick).
    Kick(u8),
    /// A new connection of the same client takes the session over: close
    /// with this reason and answer with the inbound QoS 2 packet ids still
    /// awaiting PUBREL. Handled after the packets being processed, so every
    /// PUBLISH this connection routed is in the answer.
    HandOff(u8, RpcReplyPort<HashSet<u16>>),
    /// The session actor died: close.
    SessionLost,
    /// Closing took too long (the client does not read): stop now.
    CloseTimeout,
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for ConnectionMsg {}

pub struct Connection;

pub struct ConnectionArgs {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub ctx: Arc<BrokerCtx>,
    /// The listener's count of live connections (admission control).
    pub live: LiveCount,
}

/// One live connection in its listener's count, for `max_connections`:
/// taken when the connection actor's state exists, given back when it is
/// dropped (a panic too). Only for admission: the `roost_connections`
/// gauge counts the listener's live children.
pub struct LiveCount(Arc<AtomicUsize>);

impl LiveCount {
    pub fn new(count: &Arc<AtomicUsize>) -> LiveCount {
        count.fetch_add(1, Ordering::AcqRel);
        LiveCount(count.clone())
    }
}

impl Drop for LiveCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct ConnectionState {
    ctx: Arc<BrokerCtx>,
    conn_id: u64,
    channel: Channel,
    outbound: Arc<Outbound>,
    session: Option<ActorRef<crate::session::SessionMsg>>,
    /// CONNECT was accepted (the session is attached).
    connected: bool,
    /// For the warnings: the span below is off at the default level.
    peer: SocketAddr,
    /// The client sent DISCONNECT: no will (unless reason 0x04).
    will_on_close: bool,
    /// The session is stored (persistent): so is its inbound QoS 2 state.
    stored: bool,
    session_expiry_update: Option<u32>,
    closing: bool,
    /// The last PUBLISH's QoS 2 id was stored with it: its PUBREC needs
    /// no write of its own.
    awaiting_stored: bool,
    /// Shared with the reader task, which times silence out (no timer
    /// task per connection).
    idle_limit: Arc<IdleLimit>,
    /// Debug level: a span costs ~500 B per connection in the fmt
    /// subscriber, too much to keep for every idle client by default.
    span: Span,
    _reader: AbortOnDrop,
    _live: LiveCount,
    /// Effect is ~280 B: an idle connection keeps neither vector's
    /// capacity (see `release_idle_buffers`).
    effects: Vec<Effect>,
    effects_spare: Vec<Effect>,
    /// Congested sessions and sinks this connection delivered to in the
    /// current batch.
    congested: Vec<Congested>,
}

impl Actor for Connection {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectionMsg>,
        args: ConnectionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ctx = args.ctx;
        let conn_id = ctx.next_conn_id();
        let span = tracing::debug_span!("conn", conn_id, peer = %args.peer, client_id = tracing::field::Empty, node = %ctx.config.node_name);
        let _ = args.stream.set_nodelay(true);
        let (rd, wr) = args.stream.into_split();
        let outbound = Outbound::new(ctx.config.outbound_buffer, wr, myself.clone(), ctx.clone());
        // Until CONNECT is accepted the silence limit is the handshake
        // timeout; afterwards the keep alive limit (0 = none).
        let idle_limit = Arc::new(IdleLimit {
            ms: AtomicU64::new(ctx.config.handshake_timeout.as_millis() as u64),
            changed: tokio::sync::Notify::new(),
        });
        // Not instrumented: it logs nothing, and the span would add to
        // every connection's reader task.
        let reader = tokio::spawn(read_loop(
            rd,
            myself.clone(),
            ctx.clone(),
            idle_limit.clone(),
        ));
        let assign_id = ClientId::new(format!("roost-{:x}-{:x}", ctx.id_seed, conn_id));
        Ok(ConnectionState {
            channel: Channel::new(ctx.config.channel.clone(), assign_id, Instant::now()),
            ctx,
            conn_id,
            outbound,
            session: None,
            connected: false,
            peer: args.peer,
            will_on_close: true,
            stored: false,
            idle_limit,
            session_expiry_update: None,
            closing: false,
            awaiting_stored: false,
            span,
            _reader: AbortOnDrop(reader),
            _live: args.live,
            effects: Vec::new(),
            effects_spare: Vec::new(),
            congested: Vec::new(),
        })
    }

    // Not an `async fn`: one async block keeps the arguments once, and
    // ractor boxes this future (twice its size) in every connection actor.
    fn handle(
        &self,
        myself: ActorRef<ConnectionMsg>,
        msg: ConnectionMsg,
        st: &mut Self::State,
    ) -> impl std::future::Future<Output = Result<(), ActorProcessingErr>> + Send {
        let span = st.span.clone();
        let busy = matches!(&msg, ConnectionMsg::Packets(p, _, _) if p.len() > 1);
        async move {
            match msg {
                ConnectionMsg::Packets(packets, bytes, _permit) => {
                    Counters::add(&st.ctx.counters.bytes_received, u64::from(bytes));
                    let now = Instant::now();
                    let mut paused = Duration::ZERO;
                    let mut packets = packets.into_iter();
                    // Not `for`: its `Option<Packet>` (264 B) would live in the future.
                    loop {
                        let Some(p) = packets.next() else { break };
                        st.channel.handle_in(p, now, &mut st.effects);
                        st.run_effects(&myself).await;
                        // Wait before the next packet, while the permit is
                        // held: the reader reads nothing more meanwhile and
                        // TCP slows the publisher down.
                        if !st.congested.is_empty() {
                            paused += Box::pin(st.wait_for_subscribers(paused)).await;
                        }
                    }
                }
                ConnectionMsg::ReadClosed(err) => Box::pin(st.read_closed(&myself, err)).await,
                ConnectionMsg::WriterDone(error) => writer_done(&myself, error),
                ConnectionMsg::IdleTimeout => {
                    if st.channel.state() == ChannelState::Connected {
                        st.channel.check_keep_alive(Instant::now(), &mut st.effects);
                    } else if st.channel.state() == ChannelState::Idle {
                        // [MQTT-3.1.4] no CONNECT in time.
                        debug!("handshake_timeout");
                        st.channel.close(None, &mut st.effects);
                    }
                    st.run_effects(&myself).await;
                }
                ConnectionMsg::Kick(code) => {
                    st.channel.close(Some(code), &mut st.effects);
                    st.run_effects(&myself).await;
                }
                ConnectionMsg::HandOff(code, reply) => {
                    let ids = st.channel.awaiting_rel().clone();
                    // Detached: its close must not reach the session.
                    st.session = None;
                    st.channel.close(Some(code), &mut st.effects);
                    st.run_effects(&myself).await;
                    let _ = reply.send(ids);
                }
                ConnectionMsg::SessionLost => {
                    warn!(conn_id = st.conn_id, client_id = ?st.client_id(), "session_lost");
                    st.session = None;
                    st.channel
                        .close(Some(reason::UNSPECIFIED_ERROR), &mut st.effects);
                    st.run_effects(&myself).await;
                }
                ConnectionMsg::CloseTimeout => myself.stop(Some("close_timeout".into())),
            }
            if !busy {
                st.release_idle_buffers();
            }
            Ok(())
        }
        .instrument(span)
    }

    async fn post_stop(
        &self,
        _: ActorRef<ConnectionMsg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Normal stop path; a panic skips this, and then the session learns
        // of the loss from `Drop for ConnectionState` instead.
        st.notify_session_closed();
        Ok(())
    }
}

impl ConnectionState {
    fn version(&self) -> ProtocolVersion {
        self.channel.version().unwrap_or(ProtocolVersion::V311)
    }

    /// Only opening a session awaits, and it is boxed: this future, part of
    /// every connection actor's (boxed) handler future, stays small (an
    /// async block: an `async fn` would keep its arguments twice).
    #[allow(clippy::manual_async_fn)] // see above
    fn run_effects<'a>(
        &'a mut self,
        myself: &'a ActorRef<ConnectionMsg>,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        async move {
            while let Some(info) = self.run_ready_effects(myself) {
                Box::pin(self.open_session(myself, *info)).await;
            }
        }
    }

    /// Run effects up to the next CONNECT, which is returned. The effects
    /// behind it wait in `effects_spare` (otherwise always empty, a spare)
    /// and run first next time: `open_session` must find `effects` empty.
    fn run_ready_effects(&mut self, myself: &ActorRef<ConnectionMsg>) -> Option<Box<ConnectInfo>> {
        // Two vectors swapped back and forth: no allocation per packet.
        let mut batch = std::mem::take(&mut self.effects_spare);
        loop {
            if batch.is_empty() {
                if self.effects.is_empty() {
                    break;
                }
                std::mem::swap(&mut batch, &mut self.effects);
            }
            let mut effects = batch.drain(..);
            while let Some(e) = effects.next() {
                if let Some(info) = self.run_effect(myself, e) {
                    // Once per connection: an allocation is fine.
                    self.effects_spare = effects.collect();
                    return Some(info);
                }
            }
        }
        self.effects_spare = batch;
        None
    }

    /// The vectors' capacity is kept while the reader delivers batches of
    /// packets; a quiet connection frees it (~1 KB per vector).
    fn release_idle_buffers(&mut self) {
        self.effects = Vec::new();
        self.effects_spare = Vec::new();
    }

    fn client_id(&self) -> Option<&str> {
        self.channel.client_id().map(|c| c.as_str())
    }

    /// Carries out one effect; a CONNECT is handed back to `run_effects`,
    /// the only effect that awaits.
    fn run_effect(
        &mut self,
        myself: &ActorRef<ConnectionMsg>,
        e: Effect,
    ) -> Option<Box<ConnectInfo>> {
        match e {
            Effect::Send(p) => {
                let stored_with_publish =
                    matches!(p, Packet::PubRec(_)) && std::mem::take(&mut self.awaiting_stored);
                if self.stored
                    && !stored_with_publish
                    && matches!(p, Packet::PubRec(_) | Packet::PubComp(_))
                {
                    self.store_awaiting_rel();
                }
                let _ = self.outbound.send(&p, self.version());
            }
            Effect::Publish(m) => {
                #[cfg(feature = "test-hooks")]
                crate::test_hooks::maybe_panic_connection(&m.topic);
                Counters::inc(&self.ctx.counters.publish_received[m.qos as usize]);
                // A persistent session's new QoS 2 id goes to the store in
                // the same write as the message (the PUBREC follows).
                let with = (self.stored && m.qos == QoS::ExactlyOnce)
                    .then(|| self.awaiting_rel_batch())
                    .flatten();
                self.awaiting_stored = with.is_some();
                let m = m.with_id(roost_protocol::MessageId::next());
                let outcome = publish_with(&self.ctx, Arc::new(m), with);
                for c in outcome.congested {
                    if !self.congested.iter().any(|i| i.same(&c)) {
                        self.congested.push(c);
                    }
                }
            }
            Effect::Connect(info) => return Some(info),
            Effect::Subscribe {
                packet_id,
                requests,
            } => self.to_session(SessionMsg::Subscribe {
                packet_id,
                requests,
            }),
            Effect::Unsubscribe { packet_id, filters } => {
                self.to_session(SessionMsg::Unsubscribe { packet_id, filters })
            }
            Effect::PubAck(id) => self.to_session(SessionMsg::PubAck(id)),
            Effect::PubRec { packet_id, reason } => {
                self.to_session(SessionMsg::PubRec(packet_id, reason))
            }
            Effect::PubComp(id) => self.to_session(SessionMsg::PubComp(id)),
            Effect::Disconnected {
                publish_will,
                session_expiry,
            } => {
                self.will_on_close = publish_will;
                self.session_expiry_update = session_expiry;
            }
            Effect::Close { reason } => self.begin_close(myself, reason),
        }
        None
    }

    /// Publisher flow control: pause until the congested subscribers the
    /// last publish went to have drained (see `Inbox`), at most
    /// `max_publish_delay` per read batch (`spent` so far). Returns the time
    /// waited.
    async fn wait_for_subscribers(&mut self, spent: Duration) -> Duration {
        let limit = self.ctx.config.max_publish_delay.saturating_sub(spent);
        let congested = std::mem::take(&mut self.congested);
        if limit.is_zero() {
            return Duration::ZERO;
        }
        let waited = Congested::wait_all(congested, limit).await;
        Counters::inc(&self.ctx.counters.publisher_pauses);
        Counters::add(
            &self.ctx.counters.publisher_paused_us,
            waited.as_micros() as u64,
        );
        waited
    }

    /// Store the inbound QoS 2 state of a persistent session before the
    /// PUBREC or PUBCOMP that depends on it: after a restart a PUBLISH
    /// resent with a recorded id is a duplicate [MQTT-4.3.3-9], and an id
    /// released by PUBCOMP is free again.
    fn store_awaiting_rel(&self) {
        let (Some(storage), Some(b)) = (self.ctx.storage.as_ref(), self.awaiting_rel_batch())
        else {
            return;
        };
        let client = self.client_id().unwrap_or_default();
        let result = if storage.options().sync {
            crate::broker::blocking(|| storage.commit(b))
        } else {
            storage.commit(b)
        };
        if let Err(e) = result {
            Counters::inc(&self.ctx.counters.storage_errors);
            warn!(conn_id = self.conn_id, client_id = %client, error = %e, "qos2_state_write_failed");
        }
    }

    /// A batch writing the inbound QoS 2 ids awaiting PUBREL.
    fn awaiting_rel_batch(&self) -> Option<roost_storage::Batch> {
        let client = self.channel.client_id()?;
        let ids: Vec<u16> = self.channel.awaiting_rel().iter().copied().collect();
        let mut b = roost_storage::Batch::new();
        b.set_awaiting_rel(client, &ids);
        Some(b)
    }

    fn to_session(&self, msg: SessionMsg) {
        if let Some(s) = &self.session {
            let _ = s.cast(msg);
        }
    }

    async fn open_session(&mut self, myself: &ActorRef<ConnectionMsg>, info: ConnectInfo) {
        /// A session that moved here skips second copies this long: well
        /// over the 10 s its old node redirects for.
        const MOVED_WATCH_MS: u64 = 30_000;
        self.span.record("client_id", info.client_id.as_str());
        let Some(registry) = self.ctx.registry() else {
            self.channel
                .reject(reason::SERVER_UNAVAILABLE, &mut self.effects);
            return;
        };
        // Client ids are unique cluster-wide: another node's session of
        // this client ends (or moves here) first.
        let taken = match self.ctx.remote_sessions() {
            Some(remote) => {
                remote
                    .take_over(info.client_id.clone(), info.clean_start)
                    .await
            }
            None => crate::registry::TakeOver::default(),
        };
        let handover = taken.handover;
        // What moved here, noted by the session (see below).
        let moved: Option<Vec<roost_protocol::MessageId>> = handover
            .as_ref()
            .map(|h| h.messages.iter().map(|m| m.queued.id.into()).collect());
        let req = OpenRequest {
            info: info.clone(),
            conn: myself.clone(),
            conn_id: self.conn_id,
            outbound: self.outbound.clone(),
            handover,
        };
        let result =
            match ractor::call_t!(registry, RegistryMsg::Open, OPEN_TIMEOUT_MS, Box::new(req)) {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            };
        let opened = match result {
            Ok(o) => o,
            Err(e) => {
                warn!(conn_id = self.conn_id, client_id = %info.client_id, error = %e, "session_open_failed");
                self.channel
                    .reject(reason::SERVER_UNAVAILABLE, &mut self.effects);
                return;
            }
        };
        // Before the CONNACK: nothing reaches the session before it.
        if taken.unreached {
            let _ = opened.session.cast(SessionMsg::WatchTwins {
                seen: moved.clone().unwrap_or_default(),
                for_ms: None,
            });
        }
        if let Some(seen) = moved {
            // Its old node redirects what still routes there for a while;
            // its own routes may bring the same messages.
            let _ = opened.session.cast(SessionMsg::WatchTwins {
                seen,
                for_ms: Some(MOVED_WATCH_MS),
            });
        }
        self.outbound.set_max_packet_size(info.maximum_packet_size);
        self.channel.restore_awaiting_rel(opened.awaiting_rel);
        self.stored = opened.stored;
        self.channel
            .connack(opened.session_present, &info, &mut self.effects);
        // The CONNACK must be queued before the session resends anything.
        for e in std::mem::take(&mut self.effects) {
            if let Effect::Send(p) = e {
                let _ = self.outbound.send(&p, info.version);
            }
        }
        let _ = opened.session.cast(SessionMsg::Resume);
        self.session = Some(opened.session);
        let limit = Duration::from_secs_f64(
            f64::from(info.keep_alive) * self.ctx.config.channel.keep_alive_multiplier,
        );
        self.idle_limit.set(limit);
        debug!(client_id = %info.client_id, version = ?info.version, clean_start = info.clean_start, "connected");
        self.connected = true;
    }

    async fn read_closed(&mut self, myself: &ActorRef<ConnectionMsg>, err: Option<DecodeError>) {
        match err {
            None => {
                debug!("peer_closed");
                self.channel.close(None, &mut self.effects);
            }
            Some(e) => {
                Counters::inc(&self.ctx.counters.malformed_packets);
                warn!(conn_id = self.conn_id, peer = %self.peer, client_id = ?self.client_id(), error = %e, "malformed_packet");
                if self.channel.state() == ChannelState::Idle {
                    // Before CONNECT was understood only an unsupported
                    // protocol level is answered, with a CONNACK in the only
                    // format every client reads [MQTT-3.1.2-2]. Anything
                    // else closes without CONNACK: a malformed CONNECT
                    // [MQTT-3.1.4-1] (3.1.1), or a first packet that is no
                    // CONNECT at all [MQTT-3.1.0-1].
                    if let DecodeError::UnsupportedProtocolVersion(_) = e {
                        let ack = Packet::ConnAck(ConnAck {
                            code: e.reason_code(),
                            ..ConnAck::default()
                        });
                        let _ = self.outbound.send(&ack, ProtocolVersion::V311);
                    }
                    self.channel.close(None, &mut self.effects);
                } else {
                    self.channel.close(Some(e.reason_code()), &mut self.effects);
                }
            }
        }
        self.run_effects(myself).await;
    }

    fn begin_close(&mut self, myself: &ActorRef<ConnectionMsg>, code: Option<u8>) {
        if self.closing {
            return;
        }
        self.closing = true;
        if let (Some(code), ProtocolVersion::V5) = (code, self.version()) {
            if self.channel_was_connected() {
                let mut disconnect = Disconnect::with_reason(code);
                if code == reason::USE_ANOTHER_SERVER {
                    // Evicted by an evacuation: where to go [MQTT-4.11].
                    disconnect.properties.server_reference = self.ctx.overload.server_reference();
                }
                let _ = self
                    .outbound
                    .send(&Packet::Disconnect(disconnect), ProtocolVersion::V5);
            }
        }
        debug!(reason = ?code, "closing");
        self.outbound.close();
        self.notify_session_closed();
        myself.send_after(self.ctx.config.shutdown_timeout, || {
            ConnectionMsg::CloseTimeout
        });
    }

    fn channel_was_connected(&self) -> bool {
        self.connected
    }

    fn notify_session_closed(&mut self) {
        if let Some(s) = self.session.take() {
            let closed = Closed {
                conn_id: self.conn_id,
                publish_will: self.will_on_close,
                session_expiry: self.session_expiry_update,
                awaiting_rel: self.channel.awaiting_rel().clone(),
            };
            let _ = s.cast(SessionMsg::Closed(Box::new(closed)));
        }
    }
}

/// The outbound side shut the socket down (closing) or failed: stop.
fn writer_done(myself: &ActorRef<ConnectionMsg>, error: Option<std::io::Error>) {
    if let Some(e) = error {
        debug!(error = %e, "write_failed");
    }
    myself.stop(None);
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        // Reached after a panic too (post_stop is not): the session must
        // learn that its connection is gone, and the socket and a writer
        // task, if one runs, end with the actor.
        self.notify_session_closed();
        self.outbound.abort();
    }
}

/// The reader task. An async block, not an `async fn`: its arguments are
/// kept once in every connection's reader task, not twice.
///
/// It also enforces the client's publish rate (`max_publish_rate`,
/// `max_publish_bytes_rate`): over it, the reader stops reading for as long
/// as the rate requires, so TCP slows the client down, as EMQX's limiter
/// does. Here rather than in the actor, which stays free meanwhile for
/// kicks, shutdown and its session; and the buckets are 32 bytes of this
/// task, none when no limit is set.
#[allow(clippy::manual_async_fn)] // see above
fn read_loop(
    rd: OwnedReadHalf,
    actor: ActorRef<ConnectionMsg>,
    ctx: Arc<BrokerCtx>,
    idle_limit: Arc<IdleLimit>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        let permits = Arc::new(Semaphore::new(READ_BATCHES_IN_FLIGHT));
        let mut buf = BytesMut::new();
        let mut version: Option<ProtocolVersion> = None;
        let mut last_packet = tokio::time::Instant::now();
        let mut rate = PublishLimiter::new(ctx.config.publish_limits, tokio_now());
        loop {
            // A block: the batch is not kept across the wait below.
            let (full, limited) = {
                let before = buf.len();
                let had_connect = version.is_some();
                let (batch, failed, limited) =
                    decode_batch(&mut buf, &mut version, &ctx.config, rate.as_mut());
                if !had_connect && version.is_some() && left_behind(&rd, &batch, &mut buf) {
                    let _ = actor.cast(ConnectionMsg::ReadClosed(None));
                    return;
                }
                let bytes = u32::try_from(before - buf.len()).unwrap_or(u32::MAX);
                let full = batch.len() >= MAX_BATCH;
                if !batch.is_empty() {
                    last_packet = tokio::time::Instant::now();
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    if actor
                        .cast(ConnectionMsg::Packets(batch, bytes, permit))
                        .is_err()
                    {
                        return;
                    }
                }
                if let Some(e) = failed {
                    let _ = actor.cast(ConnectionMsg::ReadClosed(Some(e)));
                    return;
                }
                (full, limited)
            };
            if let (true, Some(rate)) = (limited, &rate) {
                Counters::inc(&ctx.counters.publish_rate_limited);
                let pause = rate.pause(ctx.config.publish_limits, tokio_now());
                tokio::time::sleep(pause).await;
                // The silence was ours, not the client's (keep alive).
                last_packet = tokio::time::Instant::now();
                continue;
            }
            if full {
                continue;
            }
            let limit = idle_limit.ms.load(Ordering::Relaxed);
            let deadline = last_packet + Duration::from_millis(limit);
            let result = tokio::select! {
                r = read_more(&rd, &mut buf) => r,
                _ = idle_limit.changed.notified() => continue,
                // Disabled (never polled, no timer) without a limit.
                _ = tokio::time::sleep_until(deadline), if limit > 0 => {
                    last_packet = idle_timeout(&actor, limit);
                    continue;
                }
            };
            if !result {
                let _ = actor.cast(ConnectionMsg::ReadClosed(None));
                return;
            }
        }
    }
}

/// Silence past the limit. The actor decides (a batch may still be in its
/// mailbox, and the channel's clock lags ours by that delay): returns the
/// `last_packet` that makes the reader ask again shortly if it did not close.
fn idle_timeout(actor: &ActorRef<ConnectionMsg>, limit_ms: u64) -> tokio::time::Instant {
    let _ = actor.cast(ConnectionMsg::IdleTimeout);
    let retry = Duration::from_millis(limit_ms.min(IDLE_RECHECK_MS));
    tokio::time::Instant::now() + retry - Duration::from_millis(limit_ms)
}

/// The silence limit the reader enforces, set by the actor: the handshake
/// timeout until CONNECT is accepted, then keep alive x multiplier (0 =
/// none). Changing it wakes the reader.
struct IdleLimit {
    ms: AtomicU64,
    changed: tokio::sync::Notify,
}

impl IdleLimit {
    fn set(&self, limit: Duration) {
        self.ms.store(limit.as_millis() as u64, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

/// Decode every complete packet in `buf` (at most `MAX_BATCH`). Stops
/// after a PUBLISH that takes the client over its publish rate, and says so
/// (a bool, not the pause: it would be kept across the reader's waits).
fn decode_batch(
    buf: &mut BytesMut,
    version: &mut Option<ProtocolVersion>,
    config: &BrokerConfig,
    mut rate: Option<&mut PublishLimiter>,
) -> (Vec<Packet>, Option<DecodeError>, bool) {
    let mut batch = Vec::new();
    while batch.len() < MAX_BATCH {
        let before = buf.len();
        match codec::decode(buf, *version, config.channel.max_packet_size) {
            Ok(Some(p)) => {
                if let Packet::Connect(c) = &p {
                    *version = Some(c.protocol);
                }
                let publish = matches!(p, Packet::Publish(_));
                batch.push(p);
                if let (true, Some(rate)) = (publish, rate.as_deref_mut()) {
                    let size = before - buf.len();
                    let pause = rate.publish(config.publish_limits, size, tokio_now());
                    if !pause.is_zero() {
                        return (batch, None, true);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => return (batch, Some(e), false),
        }
    }
    (batch, None, false)
}

/// A CONNECT and nothing else, then the end of the stream: the client
/// closed before any CONNACK could reach it. It is not acted on: no session
/// is made, woken or taken over (from this node or another), and the
/// connection just closes. This is what a CONNECT looks like when it waited
/// in the kernel of a stopped or overloaded node while its client gave up
/// and connected elsewhere: acted on, it would take the session from the
/// connection the client holds now and disconnect it (0x8E).
///
/// One non-blocking read, once per connection, right behind its CONNECT.
/// Bytes it finds stay in `buf` for the decoder: a client that pipelined
/// more packets (a PUBLISH, a DISCONNECT) before closing is served as
/// before.
fn left_behind(rd: &OwnedReadHalf, batch: &[Packet], buf: &mut BytesMut) -> bool {
    let [Packet::Connect(connect)] = batch else {
        return false;
    };
    if !buf.is_empty() {
        return false;
    }
    buf.reserve(256);
    let gone = match rd.try_read_buf(buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    if gone {
        info!(client_id = %connect.client_id, "connect_ignored_client_gone");
    }
    gone
}

/// Read more bytes; false at end of stream or on error.
///
/// Readiness, then a non-blocking read: the future is a few bytes where
/// `readable()` + `read_buf()` take ~200 in every connection's reader task.
async fn read_more(rd: &OwnedReadHalf, buf: &mut BytesMut) -> bool {
    loop {
        if buf.is_empty() {
            // Idle connections hold no read buffer: wait for readability
            // first, allocate only when bytes are there.
            *buf = BytesMut::new();
        }
        let ready = std::future::poll_fn(|cx| rd.as_ref().poll_read_ready(cx)).await;
        if ready.is_err() {
            return false;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match rd.try_read_buf(buf) {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return false,
        }
    }
}
