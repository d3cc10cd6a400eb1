//! What every connection and session actor shares: the broker's handles and
//! configuration, passed by value (an `Arc`) at spawn. No globals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::ActorRef;
use roost_protocol::channel::ChannelConfig;
use roost_protocol::session::SessionConfig;

use crate::listener::ListenerMsg;
use crate::overload::Overload;
use crate::rate_limit::PublishLimits;
use crate::registry::{RegistryMsg, RemoteSessions};
use crate::retainer::RetainedStore;
use crate::router::{RouteOutcome, RouteTable, RouterMsg, ToStore};
use roost_protocol::{Delivery, Message};
use roost_storage::{AppendOutcome, Batch, QueuedMessage};
use std::time::Instant;
use tracing::warn;

/// Broker settings the actors need, derived from the node config.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_name: String,
    pub channel: ChannelConfig,
    pub session: SessionConfig,
    /// 0 = unlimited.
    pub max_subscriptions: usize,
    pub max_awaiting_rel: usize,
    pub handshake_timeout: Duration,
    /// Bytes waiting to be written to one client before it is disconnected.
    pub outbound_buffer: usize,
    /// Deliveries waiting for a session actor before new ones are dropped.
    pub inbox_capacity: usize,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    /// Longest a publisher is paused, per read batch, while a subscriber
    /// it delivered to is congested (see `Inbox`); zero disables.
    pub max_publish_delay: Duration,
    /// Connections accepted per second by each listener; 0 = unlimited.
    pub max_connection_rate: u32,
    /// Per-client publish rate limits (messages/s, bytes/s); 0 = unlimited.
    pub publish_limits: PublishLimits,
    /// Initial process RSS above which new connections are refused; 0 =
    /// off. Changeable at runtime through `BrokerCtx::overload`.
    pub memory_high_watermark: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_name: "roost@localhost".into(),
            channel: ChannelConfig::default(),
            session: SessionConfig::default(),
            max_subscriptions: 0,
            max_awaiting_rel: 100,
            handshake_timeout: Duration::from_secs(10),
            outbound_buffer: 8 << 20,
            inbox_capacity: 10_000,
            shutdown_timeout: Duration::from_secs(5),
            max_connections: 1_000_000,
            max_publish_delay: Duration::from_millis(500),
            max_connection_rate: 0,
            publish_limits: PublishLimits::default(),
            memory_high_watermark: 0,
        }
    }
}

/// Broker-wide counters. Monotonic counters only: gauges are derived from
/// live state when read (see issue #7), never kept as +/- pairs that drift.
#[derive(Debug, Default)]
pub struct Counters {
    pub messages_received: AtomicU64,
    pub messages_delivered: AtomicU64,
    pub messages_dropped_no_subscribers: AtomicU64,
    pub messages_dropped_inbox_full: AtomicU64,
    /// QoS 0 messages not written to a client whose outbound buffer was
    /// past half its limit.
    pub messages_dropped_slow_consumer: AtomicU64,
    /// Dropped from a full session queue (`max_mqueue_len`, oldest first).
    pub messages_dropped_queue_full: AtomicU64,
    /// Dropped because their Message Expiry Interval passed before delivery.
    pub messages_dropped_expired: AtomicU64,
    /// Times a publisher was paused for a congested subscriber, and for how
    /// long in total (microseconds).
    pub publisher_pauses: AtomicU64,
    pub publisher_paused_us: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Refused at `max_connections` (answered or not, see `overload`).
    pub connections_refused: AtomicU64,
    /// Refused while the memory alarm was raised.
    pub connections_refused_memory: AtomicU64,
    /// Refused while the node was being evacuated.
    pub connections_refused_evacuation: AtomicU64,
    /// Accepted connections made to wait for `max_connection_rate`.
    pub connections_rate_limited: AtomicU64,
    /// Times a client's socket was left unread for its publish rate limit.
    pub publish_rate_limited: AtomicU64,
    pub connections_force_closed: AtomicU64,
    pub connection_actor_failures: AtomicU64,
    pub session_actor_failures: AtomicU64,
    pub malformed_packets: AtomicU64,
    /// Writes to the durable store that failed (logged each time).
    pub storage_errors: AtomicU64,
    /// Bytes read from and written to client sockets.
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// PUBLISH packets received from clients / written to them (resends
    /// included), by QoS (index 0, 1, 2).
    pub publish_received: [AtomicU64; 3],
    pub publish_sent: [AtomicU64; 3],
    /// Messages of a session merged from another node that the session
    /// here had already (see `SessionMsg::WatchTwins`).
    pub merge_duplicates_skipped: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Publish one message: update the retained store when RETAIN is set, then
/// route it to every matching session. Runs inline on the publisher's actor.
pub fn publish(ctx: &BrokerCtx, msg: Arc<Message>) -> RouteOutcome {
    publish_with(ctx, msg, None)
}

/// [`publish`], with `with` committed in the same store write as the
/// message's copies for persistent subscribers (or alone when there are
/// none): a QoS 2 publisher's packet id awaiting PUBREL, so that a crash
/// can never leave the message stored without the id that makes the
/// publisher's resend a duplicate. [MQTT-4.3.3-9]
pub fn publish_with(ctx: &BrokerCtx, msg: Arc<Message>, with: Option<Batch>) -> RouteOutcome {
    Counters::inc(&ctx.counters.messages_received);
    let outcome = dispatch_with(ctx, msg, with);
    if outcome.delivered == 0 && outcome.dropped == 0 && outcome.dropped_queue_full == 0 {
        Counters::inc(&ctx.counters.messages_dropped_no_subscribers);
    }
    outcome
}

/// [`publish`] for a message the broker itself originates (`$SYS`): routed
/// and stored the same way, not counted as received from a client (nor as
/// dropped when nobody subscribes).
pub fn dispatch(ctx: &BrokerCtx, msg: Arc<Message>) -> RouteOutcome {
    dispatch_with(ctx, msg, None)
}

fn dispatch_with(ctx: &BrokerCtx, msg: Arc<Message>, with: Option<Batch>) -> RouteOutcome {
    if msg.retain {
        ctx.retained.apply(&msg);
    }
    deliver(ctx, &msg, with, |to_store| ctx.routes.route(&msg, to_store))
}

/// A message that came from a cluster peer: retained store and this node's
/// sessions, never back to peers or bridges (they got it, or will, from the
/// node it was published on). Counted as received by the cluster layer.
pub fn dispatch_from_peer(ctx: &BrokerCtx, msg: Arc<Message>) -> RouteOutcome {
    if msg.retain {
        ctx.retained.apply(&msg);
    }
    deliver(ctx, &msg, None, |to_store| {
        ctx.routes.route_sessions(&msg, to_store)
    })
}

/// A message a peer picked this node for as the member of shared group
/// `group` on `filter`: to one local member of it.
pub fn dispatch_shared_from_peer(
    ctx: &BrokerCtx,
    msg: Arc<Message>,
    group: &str,
    filter: &str,
) -> RouteOutcome {
    deliver(ctx, &msg, None, |to_store| {
        ctx.routes
            .route_shared_member(&msg, group, filter, to_store)
    })
}

/// Route with `route`, store what goes to durable queues, count inbox drops:
/// the part every dispatch shares.
fn deliver(
    ctx: &BrokerCtx,
    msg: &Arc<Message>,
    with: Option<Batch>,
    route: impl FnOnce(&mut Vec<ToStore>) -> RouteOutcome,
) -> RouteOutcome {
    let mut to_store = Vec::new();
    let mut outcome = route(&mut to_store);
    if !to_store.is_empty() || with.is_some() {
        store_then_push(ctx, msg, to_store, with, &mut outcome);
    }
    Counters::add(
        &ctx.counters.messages_dropped_inbox_full,
        outcome.dropped as u64,
    );
    outcome
}

/// Deliveries to persistent sessions: append them to the sessions' durable
/// queues in one batch, then hand them over with their seqs. The caller
/// acknowledges the publish (PUBACK, PUBREC) after this returns, so an
/// acknowledged message is in the write-ahead log of every persistent
/// subscriber's queue (docs/ARCHITECTURE.md, durability).
///
/// The commit runs on the publisher's thread: without `storage.sync` it is
/// a memtable insert and a write(2) to the log, microseconds; with it, an
/// fsync, run under `block_in_place` so that the other tasks of this worker
/// move to another one meanwhile.
fn store_then_push(
    ctx: &BrokerCtx,
    msg: &Arc<Message>,
    to_store: Vec<ToStore>,
    with: Option<Batch>,
    outcome: &mut RouteOutcome,
) {
    let Some(storage) = ctx.storage.as_ref() else {
        for t in to_store {
            t.inbox.push(Delivery::new(msg.clone(), t.opts));
        }
        return;
    };
    let (now, now_ms) = (Instant::now(), unix_ms());
    let max_len = ctx.config.session.max_mqueue_len as u64;
    let mut batch = with.unwrap_or_default();
    for t in &to_store {
        let queued = QueuedMessage::from_delivery(msg, &t.opts, now, now_ms);
        batch.append_bounded(&t.client, std::slice::from_ref(&queued), max_len);
    }
    let result = if storage.options().sync {
        blocking(|| storage.commit(batch))
    } else {
        storage.commit(batch)
    };
    let receipt = match result {
        Ok(receipt) => receipt,
        Err(e) => {
            // Not stored: still delivered while this node lives.
            Counters::inc(&ctx.counters.storage_errors);
            warn!(topic = %msg.topic, error = %e, "store_publish_failed");
            for t in to_store {
                t.inbox.push(Delivery::new(msg.clone(), t.opts));
            }
            return;
        }
    };
    // One append per entry of `to_store`, in order.
    for (t, (_, appended)) in to_store.into_iter().zip(receipt.appends) {
        let d = Delivery::new(msg.clone(), t.opts);
        match appended {
            AppendOutcome::Queued(seqs) if seqs.is_empty() => {
                // The durable queue is full: the newest message is refused,
                // so the queue keeps its order with no gap.
                Counters::inc(&ctx.counters.messages_dropped_queue_full);
                outcome.delivered -= 1;
                outcome.dropped_queue_full += 1;
            }
            AppendOutcome::Queued(seqs) => t.inbox.push_stored(Delivery {
                stored: Some(seqs.start),
                ..d
            }),
            // The session stopped being stored meanwhile (it ended, or its
            // expiry became 0): deliver from memory.
            AppendOutcome::NoSession => {
                t.inbox.push(d);
            }
        }
    }
}

/// Run a blocking call without stalling this runtime worker's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Wall clock, milliseconds since the Unix epoch (stored deadlines).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shared handles. Actor refs sit in slots because a restarted actor gets a
/// new ref: readers always take the current one.
pub struct BrokerCtx {
    pub config: BrokerConfig,
    pub routes: Arc<RouteTable>,
    pub retained: Arc<RetainedStore>,
    pub router: Arc<RwLock<Option<ActorRef<RouterMsg>>>>,
    pub registry: Arc<RwLock<Option<ActorRef<RegistryMsg>>>>,
    /// Running listeners by name, each registered by its own `pre_start`.
    pub listeners: RwLock<std::collections::HashMap<String, ActorRef<ListenerMsg>>>,
    pub counters: Counters,
    /// Memory watermark and alarm (written by the `alarms` actor, read by
    /// the listeners at every accept).
    pub overload: Overload,
    /// The node's durable store (issue #3), opened by the node before the
    /// tree starts; `None` runs without persistence (actor unit tests).
    /// Persistent sessions, their queues and retained messages go here;
    /// clean sessions never touch it.
    pub storage: Option<roost_storage::Storage>,
    /// Every configured bridge (issue #6), filled at node start; a bridge's
    /// handle outlives its actor's restarts.
    pub bridges: crate::bridge::Bridges,
    /// The cluster's side of the client registry (set by the cluster
    /// subtree while it runs).
    pub remote_sessions: RwLock<Option<Arc<dyn RemoteSessions>>>,
    /// Random per node start, so assigned client ids do not repeat across
    /// restarts.
    pub id_seed: u64,
    next_conn_id: AtomicU64,
}

impl BrokerCtx {
    pub fn new(config: BrokerConfig, id_seed: u64) -> Arc<BrokerCtx> {
        BrokerCtx::with_storage(config, id_seed, None)
    }

    pub fn with_storage(
        config: BrokerConfig,
        id_seed: u64,
        storage: Option<roost_storage::Storage>,
    ) -> Arc<BrokerCtx> {
        Arc::new(BrokerCtx {
            overload: Overload::new(config.memory_high_watermark),
            storage,
            config,
            routes: RouteTable::new(),
            retained: RetainedStore::new(),
            router: Arc::new(RwLock::new(None)),
            registry: Arc::new(RwLock::new(None)),
            listeners: RwLock::new(std::collections::HashMap::new()),
            counters: Counters::default(),
            bridges: crate::bridge::Bridges::default(),
            remote_sessions: RwLock::new(None),
            id_seed,
            next_conn_id: AtomicU64::new(1),
        })
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn router(&self) -> Option<ActorRef<RouterMsg>> {
        self.router.read().clone()
    }

    pub fn listener(&self, name: &str) -> Option<ActorRef<ListenerMsg>> {
        self.listeners.read().get(name).cloned()
    }

    pub fn registry(&self) -> Option<ActorRef<RegistryMsg>> {
        self.registry.read().clone()
    }

    pub fn remote_sessions(&self) -> Option<Arc<dyn RemoteSessions>> {
        self.remote_sessions.read().clone()
    }
}
