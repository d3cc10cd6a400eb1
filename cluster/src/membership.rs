//! The membership actor (`cluster/membership`): who is in the cluster and
//! whether each member is reachable.
//!
//! ractor_cluster is the transport (TCP, cookie authentication, remote
//! actors); it detects a dead peer only when TCP fails and never
//! reconnects. This actor owns the rest:
//! - it runs ractor_cluster's NodeServer as its own linked child; a failure
//!   to listen is logged and retried, and never stops the node;
//! - an application heartbeat: every `heartbeat_interval` to every peer
//!   that is up; a peer not heard from for `heartbeat_timeout` is marked
//!   down and its link closed (a SIGSTOPped peer keeps its TCP link);
//! - the reconnect loop: every member that is down is dialed again with
//!   backoff and jitter, its address resolved from its name on every
//!   attempt; seeds from discovery are dialed the same way;
//! - `Hello` on every new link (cluster name checked, members exchanged, so
//!   a node learns the whole cluster from any one member);
//! - the member list, persisted in the store (`member/<name>`): a restarted
//!   node dials the members it knew in the background and serves MQTT
//!   meanwhile; a member that is gone for good is just down;
//! - route replication (snapshots and versioned deltas; the heartbeat
//!   carries the version, so a lost delta is repaired by a snapshot);
//! - join, leave, force-leave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::message::BoxedDowncastErr;
use ractor::message::SerializedMessage;
use ractor::SupervisionEvent;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};
use roost_actors::broker::{blocking, unix_ms, Counters};
use roost_storage::Batch;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::discovery::{self, DiscoveryConfig};
use crate::forward::{self, ForwarderMsg, PeerLink, PeerSink};
use crate::partition::PartitionMsg;
use crate::settings::split_name;
use crate::shared::{ClusterShared, ClusterStatus, MemberStatus};
use crate::wire::{self, Control, Hello, RouteUpdate};

/// Key prefix of member records in the store's `cluster` column family.
pub const MEMBER_PREFIX: &str = "member/";
/// A member's routes as last known, so a restarted node forwards to its
/// peers (into their durable queues) before their links are back.
pub const ROUTES_PREFIX: &str = "routes/";

/// The value under [`ROUTES_PREFIX`]`<member>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRoutes {
    pub filters: Vec<String>,
}

/// A member as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub address: String,
    pub first_join_ms: u64,
    pub last_seen_ms: u64,
}

/// How often the actor checks deadlines, dials and route changes.
const TICK: Duration = Duration::from_millis(100);

/// Route changes within this window go out in one update.
const ROUTE_COALESCE: Duration = Duration::from_millis(2);

pub enum MembershipMsg {
    /// From a peer.
    Wire(Control),
    Tick,
    /// The local routes changed (a few ms ago: changes are coalesced).
    ExportRoutes,
    Session(SessionEvent, NodeServerSessionInformation),
    Dialed {
        address: String,
        result: Result<SocketAddr, String>,
    },
    Discovered(Result<Vec<String>, String>),
    Status(RpcReplyPort<ClusterStatus>),
    Join {
        address: String,
        reply: RpcReplyPort<Result<String, String>>,
    },
    Leave(RpcReplyPort<Result<(), String>>),
    ForceLeave {
        node: String,
        /// Even in a minority, or while others see it up.
        force: bool,
        reply: RpcReplyPort<Result<(), String>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    Opened,
    Authenticated,
    Ready,
    Disconnected,
}

impl ractor::Message for MembershipMsg {
    fn serializable() -> bool {
        true
    }

    /// Only `Wire` goes to peers; the other variants are local (a send of
    /// one of them to a remote actor fails here, and never happens).
    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            MembershipMsg::Wire(c) => wire::encode(&c),
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        wire::decode(bytes).map(MembershipMsg::Wire)
    }
}

/// ractor_cluster's node events, as messages to us.
struct Events(ActorRef<MembershipMsg>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(MembershipMsg::Session(SessionEvent::Opened, ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(MembershipMsg::Session(SessionEvent::Disconnected, ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(MembershipMsg::Session(SessionEvent::Authenticated, ses));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(MembershipMsg::Session(SessionEvent::Ready, ses));
    }
}

pub struct Membership;

pub struct MembershipArgs {
    pub shared: Arc<ClusterShared>,
}

/// Backoff state of one address we dial.
#[derive(Debug, Clone)]
struct Dial {
    attempt: u32,
    next: Instant,
    in_flight: bool,
}

impl Dial {
    fn now() -> Dial {
        Dial {
            attempt: 0,
            next: Instant::now(),
            in_flight: false,
        }
    }
}

enum Link {
    Down {
        reason: String,
    },
    Up {
        node_id: u64,
        session: ActorRef<NodeSessionMessage>,
        control: ActorRef<MembershipMsg>,
        last_heard: Instant,
    },
}

struct Peer {
    address: String,
    /// 0 = known from another member, never reached by us.
    first_join_ms: u64,
    last_seen_ms: u64,
    link: Link,
    dial: Dial,
    incarnation: u64,
    /// Its routes as we know them: (epoch, version, filters).
    routes: (u64, u64, BTreeSet<String>),
    routes_wanted_at: Option<Instant>,
}

struct Session {
    actor: ActorRef<NodeSessionMessage>,
    peer: Option<String>,
    peer_addr: String,
    is_server: bool,
    opened: Instant,
    authenticated: bool,
    ready: bool,
}

/// A `cluster join` waiting for its address to answer: (address, deadline, reply).
type PendingJoin = (String, Instant, RpcReplyPort<Result<String, String>>);

pub struct State {
    shared: Arc<ClusterShared>,
    me: String,
    server: Option<ActorRef<NodeServerMessage>>,
    server_retry: Instant,
    /// Failed binds in a row: the retry backs off from 200 ms to 5 s. A
    /// restarted cluster subtree rebinds while the old listener's socket
    /// may still be closing.
    listen_failures: u32,
    peers: BTreeMap<String, Peer>,
    /// Addresses to dial that are not (yet) a known member's: discovery's
    /// seeds and `cluster join` targets, with the member each turned out
    /// to be.
    seeds: BTreeMap<String, (Dial, Option<String>)>,
    /// What each dial connected to, to map a seed to the member behind it.
    dialed_to: HashMap<String, String>,
    sessions: HashMap<u64, Session>,
    /// Our routes as last announced.
    routes_sent: BTreeSet<String>,
    routes_version: u64,
    table_version: u64,
    last_heartbeat: Instant,
    next_discovery: Instant,
    discovering: bool,
    joins: Vec<PendingJoin>,
    /// After `leave`: no dialing, and links refused, until a `join`.
    left: bool,
    /// Members that left: not dialed again (they may dial us, or be joined).
    departed: BTreeSet<String>,
    /// Hellos that arrived before our own ready event for their link.
    early_hellos: HashMap<String, Hello>,
    /// The peers each up peer saw up, from its last heartbeat.
    seen_by: HashMap<String, BTreeSet<String>>,
    /// Members whose routes changed since they were last stored.
    routes_dirty: BTreeSet<String>,
    routes_saved_at: Instant,
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = State;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<State, ActorProcessingErr> {
        let shared = args.shared;
        let me = shared.settings.node_name.clone();
        let epoch = shared.next_epoch();
        debug!(epoch, "cluster_epoch");
        ractor::pg::join(wire::CONTROL_GROUP.to_string(), vec![myself.get_cell()]);
        *shared.membership.write() = Some(myself.clone());
        let mut state = State {
            me,
            server: None,
            server_retry: Instant::now(),
            listen_failures: 0,
            peers: BTreeMap::new(),
            seeds: BTreeMap::new(),
            dialed_to: HashMap::new(),
            sessions: HashMap::new(),
            routes_sent: BTreeSet::new(),
            routes_version: 0,
            table_version: u64::MAX,
            last_heartbeat: Instant::now(),
            next_discovery: Instant::now(),
            discovering: false,
            joins: Vec::new(),
            left: false,
            departed: BTreeSet::new(),
            early_hellos: HashMap::new(),
            seen_by: HashMap::new(),
            routes_dirty: BTreeSet::new(),
            routes_saved_at: Instant::now(),
            shared,
        };
        state.load_members();
        // A restarted membership actor starts from a clean transport: the
        // links of the previous one are gone with its NodeServer.
        for name in state.peers.keys().cloned().collect::<Vec<_>>() {
            state.ensure_link(&name);
        }
        // Their routes as last known: what is published here before their
        // links are back goes to their (durable) forward queues. Their
        // snapshots replace them when the links come up.
        let known: Vec<(String, Vec<String>)> = state
            .peers
            .iter()
            .filter(|(_, p)| !p.routes.2.is_empty())
            .map(|(n, p)| (n.clone(), p.routes.2.iter().cloned().collect()))
            .collect();
        for (name, filters) in known {
            state.attach_routes(&name, filters, Vec::new());
        }
        state.start_server(&myself).await;
        myself.send_interval(TICK, || MembershipMsg::Tick);
        // Routes go out within ROUTE_COALESCE of a change, not at the next
        // tick: a subscriber on another node misses what is published
        // before its route arrives.
        let pending = Arc::new(AtomicBool::new(false));
        let me = myself.clone();
        state
            .shared
            .ctx
            .routes
            .set_on_change(Some(Arc::new(move || {
                if !pending.swap(true, Ordering::AcqRel) {
                    let pending = pending.clone();
                    me.send_after(ROUTE_COALESCE, move || {
                        pending.store(false, Ordering::Release);
                        MembershipMsg::ExportRoutes
                    });
                }
            })));
        info!(
            node = %state.me,
            cluster = %state.shared.settings.cluster_name,
            listen = %state.shared.settings.listen,
            advertise = %state.shared.settings.advertise,
            members = state.peers.len(),
            "cluster_started"
        );
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MembershipMsg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        *state.shared.membership.write() = None;
        state.shared.ctx.routes.set_on_change(None);
        for s in state.sessions.values() {
            s.actor.stop(Some("cluster stopping".into()));
        }
        if let Some(server) = &state.server {
            // Killed, not stopped: its listener waits in accept() and would
            // only see a stop after the next connection, keeping the port
            // bound while this subtree restarts and binds it again.
            // Waited for, with its listener and sessions, so that the
            // restarted subtree finds the port free.
            let children = server.get_children();
            server.kill();
            for cell in std::iter::once(server.get_cell()).chain(children) {
                let _ = cell.wait(Some(Duration::from_secs(1))).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MembershipMsg>,
        evt: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let is_server = |c: &ActorCell| {
            state
                .server
                .as_ref()
                .is_some_and(|s| s.get_id() == c.get_id())
        };
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) if is_server(&cell) => {
                warn!(?reason, "cluster_transport_stopped: restarting it");
                state.server = None;
                state.server_retry = Instant::now() + Duration::from_secs(1);
            }
            SupervisionEvent::ActorFailed(cell, e) if is_server(&cell) => {
                error!(error = %e, "cluster_transport_failed: restarting it");
                state.server = None;
                state.server_retry = Instant::now() + Duration::from_secs(1);
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMsg::Tick => state.tick(&myself).await,
            MembershipMsg::ExportRoutes => state.export_routes(),
            MembershipMsg::Wire(c) => state.on_wire(c),
            MembershipMsg::Session(ev, info) => state.on_session(ev, info),
            MembershipMsg::Dialed { address, result } => state.on_dialed(address, result),
            MembershipMsg::Discovered(r) => state.on_discovered(r),
            MembershipMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            MembershipMsg::Join { address, reply } => state.join(address, reply),
            MembershipMsg::Leave(reply) => {
                let _ = reply.send(state.leave());
            }
            MembershipMsg::ForceLeave { node, force, reply } => {
                let _ = reply.send(state.force_leave(&node, force));
            }
        }
        Ok(())
    }
}

impl State {
    fn settings(&self) -> &crate::settings::ClusterSettings {
        &self.shared.settings
    }

    // ---- transport -------------------------------------------------------

    async fn start_server(&mut self, myself: &ActorRef<MembershipMsg>) {
        let s = &self.shared.settings;
        let (name, host) = split_name(&s.node_name);
        let server = NodeServer::new(
            s.listen.port(),
            s.cookie.clone(),
            name,
            host,
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(s.listen.ip());
        match Actor::spawn_linked(None, server, (), myself.get_cell()).await {
            Ok((server, _)) => {
                let _ = server.cast(NodeServerMessage::SubscribeToEvents {
                    id: "roost.membership".into(),
                    subscription: Box::new(Events(myself.clone())),
                });
                self.server = Some(server);
                self.listen_failures = 0;
            }
            Err(e) => {
                // Never fatal: the node serves MQTT without its cluster.
                let retry = Duration::from_millis(200)
                    .saturating_mul(1 << self.listen_failures.min(5))
                    .min(Duration::from_secs(5));
                self.listen_failures += 1;
                error!(listen = %s.listen, error = %e, retry_in = ?retry, "cluster_listen_failed");
                self.server_retry = Instant::now() + retry;
            }
        }
    }

    fn dial(&mut self, myself: &ActorRef<MembershipMsg>, address: String) {
        let Some(server) = self.server.clone() else {
            return;
        };
        let me = myself.clone();
        let timeout = self.settings().connect_timeout;
        tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, async {
                // Resolved now, on every attempt: never an IP remembered
                // from an earlier one.
                let addr = tokio::net::lookup_host(&address)
                    .await
                    .map_err(|e| format!("cannot resolve {address}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{address} resolves to no address"))?;
                ractor_cluster::client_connect(&server, addr)
                    .await
                    .map_err(|e| format!("cannot connect to {address} ({addr}): {e}"))?;
                Ok(addr)
            })
            .await
            .unwrap_or_else(|_| Err(format!("connecting to {address} timed out")));
            let _ = me.cast(MembershipMsg::Dialed { address, result });
        });
    }

    fn on_dialed(&mut self, address: String, result: Result<SocketAddr, String>) {
        let backoff = |d: &mut Dial, s: &crate::settings::ClusterSettings| {
            d.in_flight = false;
            d.attempt = d.attempt.saturating_add(1);
            d.next =
                Instant::now() + discovery::backoff(d.attempt, s.reconnect_base, s.reconnect_max);
        };
        let settings = self.shared.settings.clone();
        match result {
            Ok(addr) => {
                self.dialed_to.insert(addr.to_string(), address.clone());
                // Not up yet: authentication and hello follow. Retry later
                // if they do not.
                for (name, p) in self.peers.iter_mut() {
                    if dial_address(&settings, name, p) == address {
                        backoff(&mut p.dial, &settings);
                    }
                }
                if let Some((d, _)) = self.seeds.get_mut(&address) {
                    backoff(d, &settings);
                }
            }
            Err(e) => {
                let mut logged = false;
                for (name, p) in self.peers.iter_mut() {
                    if dial_address(&settings, name, p) == address {
                        if p.dial.attempt < 3 || p.dial.attempt.is_power_of_two() {
                            info!(peer = %name, error = %e, attempt = p.dial.attempt, "cluster_peer_unreachable");
                        }
                        logged = true;
                        backoff(&mut p.dial, &settings);
                    }
                }
                if let Some((d, _)) = self.seeds.get_mut(&address) {
                    if !logged && (d.attempt < 3 || d.attempt.is_power_of_two()) {
                        info!(seed = %address, error = %e, attempt = d.attempt, "cluster_seed_unreachable");
                    }
                    backoff(d, &settings);
                }
                self.fail_joins(&address, &e);
            }
        }
    }

    fn on_session(&mut self, ev: SessionEvent, info: NodeServerSessionInformation) {
        let peer = info.peer_name.as_ref().map(|n| n.name.clone());
        match ev {
            SessionEvent::Opened => {
                self.sessions.insert(
                    info.node_id,
                    Session {
                        actor: info.actor.clone(),
                        peer,
                        peer_addr: info.peer_addr.clone(),
                        is_server: info.is_server,
                        opened: Instant::now(),
                        authenticated: false,
                        ready: false,
                    },
                );
            }
            SessionEvent::Authenticated | SessionEvent::Ready => {
                let s = self.sessions.entry(info.node_id).or_insert(Session {
                    actor: info.actor.clone(),
                    peer: None,
                    peer_addr: info.peer_addr.clone(),
                    is_server: info.is_server,
                    opened: Instant::now(),
                    authenticated: false,
                    ready: false,
                });
                s.peer = peer.or(s.peer.take());
                s.authenticated = true;
                if ev == SessionEvent::Ready {
                    s.ready = true;
                    let peer = s.peer.clone();
                    self.send_hello(info.node_id, true);
                    // Its hello may have come before this event.
                    if let Some(h) = peer.and_then(|p| self.early_hellos.remove(&p)) {
                        self.on_hello(h);
                    }
                }
            }
            SessionEvent::Disconnected => {
                let s = self.sessions.remove(&info.node_id);
                let authenticated = s.as_ref().is_some_and(|s| s.authenticated);
                let name = peer.or_else(|| s.as_ref().and_then(|s| s.peer.clone()));
                if !authenticated {
                    Counters::inc(&self.shared.counters.peers_refused);
                    warn!(
                        peer = name.as_deref().unwrap_or("?"),
                        addr = %info.peer_addr,
                        "cluster_handshake_failed: the link closed before authentication \
                         (a different cookie on the two nodes, or the peer went away)"
                    );
                }
                if let Some(name) = name {
                    let is_current = matches!(
                        self.peers.get(&name).map(|p| &p.link),
                        Some(Link::Up { node_id, .. }) if *node_id == info.node_id
                    );
                    // Both nodes dialed each other: ractor_cluster keeps one
                    // of the two links. Carry on over the survivor.
                    let survivor = self
                        .sessions
                        .iter()
                        .find(|(_, s)| s.ready && s.peer.as_deref() == Some(&name))
                        .map(|(id, _)| *id);
                    match (is_current, survivor) {
                        (true, Some(id)) => self.send_hello(id, true),
                        (true, None) => self.peer_down(&name, "link closed".into(), false),
                        _ => {}
                    }
                }
            }
        }
    }

    /// The remote actor of `group` on the node behind session `node_id`.
    fn send_hello(&self, node_id: u64, want_reply: bool) {
        let Some(control) = wire::remote_member(wire::CONTROL_GROUP, node_id) else {
            warn!(
                node_id,
                "cluster_peer_without_membership_actor: is it a Roost node?"
            );
            return;
        };
        let members = self
            .peers
            .iter()
            .filter(|(_, p)| p.first_join_ms > 0)
            .map(|(n, p)| (n.clone(), p.address.clone()))
            .collect();
        let hello = Hello {
            cluster: self.settings().cluster_name.clone(),
            from: self.me.clone(),
            incarnation: self.shared.incarnation,
            epoch: self.shared.epoch(),
            advertise: self.settings().advertise.clone(),
            members,
            want_reply,
        };
        let control: ActorRef<MembershipMsg> = control.into();
        let _ = control.cast(MembershipMsg::Wire(Control::Hello(hello)));
    }

    // ---- control messages from peers -------------------------------------

    fn on_wire(&mut self, c: Control) {
        match c {
            Control::Hello(h) => self.on_hello(h),
            Control::Refused { from, reason } => {
                Counters::inc(&self.shared.counters.peers_refused);
                error!(peer = %from, %reason, "cluster_refused_by_peer");
                for s in self.sessions.values() {
                    if s.peer.as_deref() == Some(&from) {
                        s.actor.stop(Some("refused".into()));
                    }
                }
            }
            Control::Heartbeat {
                from,
                epoch,
                routes_version,
                up: seen,
            } => {
                let now = Instant::now();
                let up = matches!(
                    self.peers.get(&from).map(|p| &p.link),
                    Some(Link::Up { .. })
                );
                if !up {
                    // It has us up and we do not have it: redo the hellos
                    // over the link it uses.
                    let ready = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.ready && s.peer.as_deref() == Some(&from))
                        .map(|(id, _)| *id)
                        .max();
                    if let Some(id) = ready {
                        self.send_hello(id, true);
                    }
                    return;
                }
                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                if let Link::Up { last_heard, .. } = &mut p.link {
                    *last_heard = now;
                    p.last_seen_ms = unix_ms();
                }
                self.seen_by
                    .insert(from.clone(), seen.iter().cloned().collect());
                self.tell_partition(PartitionMsg::Seen {
                    from: from.clone(),
                    up: seen,
                });
                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                let behind = p.routes.0 != epoch || p.routes.1 < routes_version;
                let asked_recently = p
                    .routes_wanted_at
                    .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2));
                if behind && !asked_recently && matches!(p.link, Link::Up { .. }) {
                    p.routes_wanted_at = Some(now);
                    self.send_to(
                        &from,
                        Control::RoutesWanted {
                            from: self.me.clone(),
                        },
                    );
                }
            }
            Control::Routes(u) => self.on_routes(u),
            Control::RoutesWanted { from } => self.send_snapshot(&from),
            Control::Partition(w) => self.tell_partition(PartitionMsg::Wire(w)),
            Control::Leaving { from } => {
                info!(peer = %from, "cluster_peer_left");
                self.remove_peer(&from);
                self.departed.insert(from);
            }
            Control::Forget { from, node } => {
                if node == self.me {
                    warn!(peer = %from, "cluster_forgotten_by_peer: it force-left this node; \
                        the link is re-made by the next hello");
                } else if matches!(
                    self.peers.get(&node).map(|p| &p.link),
                    Some(Link::Up { .. })
                ) {
                    warn!(peer = %from, %node, "cluster_forget_ignored: the node is up here");
                } else if self.peers.contains_key(&node) {
                    info!(peer = %from, %node, "cluster_member_force_left");
                    self.remove_peer(&node);
                }
            }
        }
    }

    fn on_hello(&mut self, h: Hello) {
        let session = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ready && s.peer.as_deref() == Some(&h.from))
            .map(|(id, s)| (*id, s.actor.clone(), s.peer_addr.clone(), s.is_server))
            .max_by_key(|(id, ..)| *id);
        let Some((node_id, session, peer_addr, is_server)) = session else {
            // Its link is ready on its side before ours: handled with our
            // ready event.
            debug!(peer = %h.from, "cluster_hello_before_ready");
            self.early_hellos.insert(h.from.clone(), h);
            return;
        };
        let Some(control) = wire::remote_member(wire::CONTROL_GROUP, node_id) else {
            return;
        };
        let control: ActorRef<MembershipMsg> = control.into();
        if h.cluster != self.settings().cluster_name {
            Counters::inc(&self.shared.counters.peers_refused);
            let reason = format!(
                "cluster name {:?} differs from ours, {:?} (cluster.name)",
                h.cluster,
                self.settings().cluster_name
            );
            error!(peer = %h.from, %reason, "cluster_peer_refused");
            let _ = control.cast(MembershipMsg::Wire(Control::Refused {
                from: self.me.clone(),
                reason: format!(
                    "{} is in cluster {:?}, not {:?}",
                    self.me,
                    self.settings().cluster_name,
                    h.cluster
                ),
            }));
            session.stop(Some("cluster name mismatch".into()));
            return;
        }
        if h.from == self.me {
            return;
        }
        if self.left {
            info!(peer = %h.from, "cluster_link_refused: this node left the cluster (`roost ctl cluster join` to join again)");
            let _ = control.cast(MembershipMsg::Wire(Control::Refused {
                from: self.me.clone(),
                reason: format!("{} left the cluster", self.me),
            }));
            session.stop(Some("left the cluster".into()));
            return;
        }
        self.departed.remove(&h.from);
        // The seed we dialed for this link (if we dialed), now known by name.
        if !is_server {
            if let Some(seed) = self.dialed_to.get(&peer_addr).cloned() {
                if let Some((_, who)) = self.seeds.get_mut(&seed) {
                    *who = Some(h.from.clone());
                }
            }
        }
        let now_ms = unix_ms();
        let new = !self.peers.contains_key(&h.from);
        let p = self.peers.entry(h.from.clone()).or_insert_with(|| Peer {
            address: h.advertise.clone(),
            first_join_ms: 0,
            last_seen_ms: 0,
            link: Link::Down {
                reason: String::new(),
            },
            dial: Dial::now(),
            incarnation: 0,
            routes: (0, 0, BTreeSet::new()),
            routes_wanted_at: None,
        });
        let was_up = matches!(p.link, Link::Up { .. });
        if p.incarnation != h.incarnation && p.incarnation != 0 {
            info!(peer = %h.from, "cluster_peer_restarted");
        }
        p.incarnation = h.incarnation;
        p.address = h.advertise.clone();
        if p.first_join_ms == 0 {
            p.first_join_ms = now_ms;
        }
        p.last_seen_ms = now_ms;
        p.dial = Dial::now();
        p.link = Link::Up {
            node_id,
            session,
            control,
            last_heard: Instant::now(),
        };
        if !was_up {
            info!(peer = %h.from, address = %h.advertise, new, "cluster_peer_up");
        }
        // Only the node running longer sends its retained messages: a node
        // that was away may hold some the others deleted or replaced
        // meanwhile, and must not spread them (see `takeover::send_retained`).
        let send_retained = !was_up && self.shared.epoch() <= h.epoch;
        if h.want_reply {
            self.send_hello(node_id, false);
        }
        self.persist_member(&h.from);
        self.ensure_link(&h.from);
        if let Some(data) = wire::remote_member(wire::DATA_GROUP, node_id) {
            if let Some(f) = self.shared.forwarder.read().clone() {
                let _ = f.cast(ForwarderMsg::Up(h.from.clone(), data.into()));
            }
        }
        // Members it knows that we do not: dial them too.
        for (name, address) in h.members {
            if name != self.me && !self.peers.contains_key(&name) {
                info!(peer = %name, via = %h.from, "cluster_member_learned");
                self.peers.insert(
                    name,
                    Peer {
                        address,
                        first_join_ms: 0,
                        last_seen_ms: 0,
                        link: Link::Down {
                            reason: "not reached yet".into(),
                        },
                        dial: Dial::now(),
                        incarnation: 0,
                        routes: (0, 0, BTreeSet::new()),
                        routes_wanted_at: None,
                    },
                );
            }
        }
        self.send_snapshot(&h.from);
        if send_retained {
            crate::takeover::send_retained(&self.shared, &h.from);
        }
        if !was_up {
            self.tell_partition(PartitionMsg::PeerUp {
                peer: h.from.clone(),
                epoch: h.epoch,
                incarnation: h.incarnation,
            });
            crate::takeover::reconcile_sessions(&self.shared, &h.from);
        }
        self.complete_joins(&h.from);
    }

    fn send_to(&self, peer: &str, c: Control) {
        if let Some(Link::Up { control, .. }) = self.peers.get(peer).map(|p| &p.link) {
            let _ = control.cast(MembershipMsg::Wire(c));
        }
    }

    // ---- routes ------------------------------------------------------------

    fn send_snapshot(&self, peer: &str) {
        self.send_to(
            peer,
            Control::Routes(RouteUpdate {
                from: self.me.clone(),
                epoch: self.shared.epoch(),
                version: self.routes_version,
                snapshot: true,
                added: self.routes_sent.iter().cloned().collect(),
                removed: Vec::new(),
            }),
        );
    }

    /// Announce the local routes if they changed since the last look.
    fn export_routes(&mut self) {
        let table = &self.shared.ctx.routes;
        let v = table.version();
        if v == self.table_version {
            return;
        }
        self.table_version = v;
        let now = table.local_filters();
        if now == self.routes_sent {
            return;
        }
        let added: Vec<String> = now.difference(&self.routes_sent).cloned().collect();
        let removed: Vec<String> = self.routes_sent.difference(&now).cloned().collect();
        self.routes_sent = now;
        self.routes_version += 1;
        let update = RouteUpdate {
            from: self.me.clone(),
            epoch: self.shared.epoch(),
            version: self.routes_version,
            snapshot: false,
            added,
            removed,
        };
        for name in self.up_peers() {
            self.send_to(&name, Control::Routes(update.clone()));
        }
    }

    fn on_routes(&mut self, u: RouteUpdate) {
        let Some(p) = self.peers.get_mut(&u.from) else {
            return;
        };
        let (inc, ver, filters) = &mut p.routes;
        let mut added = Vec::new();
        let mut removed = Vec::new();
        if u.snapshot {
            let new: BTreeSet<String> = u.added.into_iter().collect();
            added = new.difference(filters).cloned().collect();
            removed = filters.difference(&new).cloned().collect();
            *filters = new;
        } else if *inc == u.epoch && u.version == *ver + 1 {
            for f in u.added {
                if filters.insert(f.clone()) {
                    added.push(f);
                }
            }
            for f in u.removed {
                if filters.remove(&f) {
                    removed.push(f);
                }
            }
        } else {
            if *inc == u.epoch && u.version <= *ver {
                return; // old news
            }
            debug!(peer = %u.from, have = *ver, got = u.version, "cluster_routes_gap");
            p.routes_wanted_at = Some(Instant::now());
            let from = u.from.clone();
            self.send_to(
                &from,
                Control::RoutesWanted {
                    from: self.me.clone(),
                },
            );
            return;
        }
        *inc = u.epoch;
        *ver = u.version;
        let from = u.from;
        self.routes_dirty.insert(from.clone());
        self.attach_routes(&from, added, removed);
    }

    /// Route `added` filters to `from`'s link, and no longer `removed`.
    fn attach_routes(&self, from: &str, added: Vec<String>, removed: Vec<String>) {
        if let Some(link) = self.shared.link(from) {
            let name = forward::sink_name(from);
            let routes = &self.shared.ctx.routes;
            let (removed_shared, removed): (Vec<String>, Vec<String>) =
                removed.into_iter().partition(|f| f.starts_with("$share/"));
            let (added_shared, added): (Vec<String>, Vec<String>) =
                added.into_iter().partition(|f| f.starts_with("$share/"));
            let sink: Arc<dyn roost_actors::router::RouteSink> = Arc::new(PeerSink { link });
            routes.remove_sink_routes(&name, &removed);
            routes.add_sink_routes(&name, &added, sink.clone());
            routes.remove_remote_shared(&name, &removed_shared);
            routes.add_remote_shared(&name, &added_shared, sink);
        }
    }

    /// Create the forwarding link (mailbox, retained broadcast) of a member.
    fn ensure_link(&mut self, peer: &str) {
        if self.shared.links.read().contains_key(peer) {
            return;
        }
        let durable = self
            .shared
            .storage
            .clone()
            .filter(|_| self.settings().forward_durable);
        match PeerLink::new(peer, self.settings().forward_buffer, durable) {
            Ok(link) => {
                let link = Arc::new(link);
                if let Some(f) = self.shared.forwarder.read().clone() {
                    forward::wire_wake(&link, &f);
                }
                self.shared.ctx.routes.set_broadcast(
                    &forward::sink_name(peer),
                    Some(Arc::new(PeerSink { link: link.clone() })),
                );
                self.shared.links.write().insert(peer.to_owned(), link);
            }
            Err(e) => error!(%peer, error = %e, "cluster_link_failed"),
        }
    }

    // ---- liveness ----------------------------------------------------------

    fn up_peers(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(p.link, Link::Up { .. }))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `timed_out`: no heartbeat for `heartbeat_timeout` (else the link closed).
    fn peer_down(&mut self, name: &str, reason: String, timed_out: bool) {
        let Some(p) = self.peers.get_mut(name) else {
            return;
        };
        if let Link::Up { session, .. } = &p.link {
            session.stop(Some(format!("peer down: {reason}")));
        }
        warn!(peer = %name, %reason, "cluster_peer_down");
        p.link = Link::Down { reason };
        self.seen_by.remove(name);
        p.dial = Dial::now();
        p.dial.next = Instant::now() + self.shared.settings.reconnect_base;
        self.persist_member(name);
        if let Some(f) = self.shared.forwarder.read().clone() {
            let _ = f.cast(ForwarderMsg::Down(name.to_owned()));
        }
        self.tell_partition(PartitionMsg::PeerDown {
            peer: name.to_owned(),
            timed_out,
        });
    }

    fn tell_partition(&self, msg: PartitionMsg) {
        if let Some(p) = self.shared.partition.read().clone() {
            let _ = p.cast(msg);
        }
    }

    async fn tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        if self.server.is_none() && now >= self.server_retry {
            self.start_server(myself).await;
        }
        // Deadlines.
        let timeout = self.settings().heartbeat_timeout;
        // Any data from the peer counts as a heartbeat: on a slow link the
        // heartbeat waits behind the backlog the data is part of.
        let late: Vec<String> = self
            .peers
            .iter()
            .filter_map(|(n, p)| match &p.link {
                Link::Up { last_heard, .. } => {
                    let heard = self
                        .shared
                        .last_data_from(n)
                        .map_or(*last_heard, |d| d.max(*last_heard));
                    (now.duration_since(heard) > timeout).then(|| n.clone())
                }
                _ => None,
            })
            .collect();
        for name in late {
            Counters::inc(&self.shared.counters.heartbeat_timeouts);
            self.peer_down(&name, format!("no heartbeat for {timeout:?}"), true);
        }
        let connect_timeout = self.settings().connect_timeout;
        for s in self.sessions.values() {
            if !s.ready && now.duration_since(s.opened) > connect_timeout {
                debug!(peer = ?s.peer, addr = %s.peer_addr, "cluster_handshake_timeout");
                s.actor.stop(Some("handshake timeout".into()));
            }
        }
        // Heartbeats and routes.
        self.export_routes();
        if !self.routes_dirty.is_empty()
            && now.duration_since(self.routes_saved_at) >= Duration::from_secs(1)
        {
            self.routes_saved_at = now;
            self.persist_routes();
        }
        if now.duration_since(self.last_heartbeat) >= self.settings().heartbeat_interval {
            self.last_heartbeat = now;
            let hb = Control::Heartbeat {
                from: self.me.clone(),
                epoch: self.shared.epoch(),
                routes_version: self.routes_version,
                up: self.up_peers(),
            };
            for name in self.up_peers() {
                self.send_to(&name, hb.clone());
            }
        }
        self.expire_joins();
        if self.left || self.server.is_none() {
            return;
        }
        // Discovery.
        if !self.discovering && now >= self.next_discovery {
            self.next_discovery = now + self.settings().discovery_interval;
            if !matches!(self.settings().discovery, DiscoveryConfig::Manual) {
                self.discovering = true;
                let cfg = self.settings().discovery.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let r = discovery::discover(&cfg)
                        .await
                        .map(|cs| cs.iter().map(ToString::to_string).collect())
                        .map_err(|e| e.to_string());
                    let _ = me.cast(MembershipMsg::Discovered(r));
                });
            }
        }
        // Dialing.
        let busy: BTreeSet<String> = self
            .sessions
            .values()
            .filter_map(|s| s.peer.clone())
            .collect();
        let mut to_dial = Vec::new();
        for (name, p) in self.peers.iter_mut() {
            if matches!(p.link, Link::Down { .. })
                && !p.dial.in_flight
                && now >= p.dial.next
                && !busy.contains(name)
            {
                p.dial.in_flight = true;
                to_dial.push(dial_address(&self.shared.settings, name, p).to_owned());
            }
        }
        let up: BTreeSet<String> = self.up_peers().into_iter().collect();
        let own = self.settings().advertise.clone();
        let known_addresses: BTreeSet<String> = self
            .peers
            .iter()
            .map(|(n, p)| dial_address(&self.shared.settings, n, p).to_owned())
            .collect();
        for (address, (d, who)) in self.seeds.iter_mut() {
            let reached = who
                .as_ref()
                .is_some_and(|w| up.contains(w) || busy.contains(w) || self.departed.contains(w));
            if *address == own || reached || known_addresses.contains(address) {
                continue;
            }
            if !d.in_flight && now >= d.next {
                d.in_flight = true;
                to_dial.push(address.clone());
            }
        }
        for address in to_dial {
            self.dial(myself, address);
        }
    }

    fn on_discovered(&mut self, r: Result<Vec<String>, String>) {
        self.discovering = false;
        match r {
            Ok(addresses) => {
                for a in addresses {
                    self.seeds.entry(a).or_insert_with(|| (Dial::now(), None));
                }
            }
            Err(e) => warn!(error = %e, "cluster_discovery_failed: retrying"),
        }
    }

    // ---- operator commands -----------------------------------------------

    fn join(&mut self, address: String, reply: RpcReplyPort<Result<String, String>>) {
        if address == self.settings().advertise {
            let _ = reply.send(Err(format!("{address} is this node")));
            return;
        }
        self.left = false;
        if let Some((_, Some(who))) = self.seeds.get(&address) {
            self.departed.remove(who);
        }
        // Already a member at that address and up: nothing to do.
        if let Some((name, _)) = self
            .peers
            .iter()
            .find(|(_, p)| p.address == address && matches!(p.link, Link::Up { .. }))
        {
            let _ = reply.send(Ok(name.clone()));
            return;
        }
        let entry = self
            .seeds
            .entry(address.clone())
            .or_insert_with(|| (Dial::now(), None));
        entry.0 = Dial::now();
        self.joins.push((
            address,
            Instant::now() + self.settings().connect_timeout * 2,
            reply,
        ));
    }

    fn complete_joins(&mut self, peer: &str) {
        let address = self.peers.get(peer).map(|p| p.address.clone());
        let seeds_for: BTreeSet<String> = self
            .seeds
            .iter()
            .filter(|(_, (_, who))| who.as_deref() == Some(peer))
            .map(|(a, _)| a.clone())
            .collect();
        let joins = std::mem::take(&mut self.joins);
        for (a, deadline, reply) in joins {
            if Some(&a) == address.as_ref() || seeds_for.contains(&a) {
                let _ = reply.send(Ok(peer.to_owned()));
            } else {
                self.joins.push((a, deadline, reply));
            }
        }
    }

    fn fail_joins(&mut self, address: &str, error: &str) {
        let joins = std::mem::take(&mut self.joins);
        for (a, deadline, reply) in joins {
            if a == address {
                let _ = reply.send(Err(error.to_owned()));
            } else {
                self.joins.push((a, deadline, reply));
            }
        }
    }

    fn expire_joins(&mut self) {
        let now = Instant::now();
        let joins = std::mem::take(&mut self.joins);
        for (a, deadline, reply) in joins {
            if now >= deadline {
                let _ = reply.send(Err(format!(
                    "{a} did not complete the handshake in time: check that it runs, that \
                     its cluster listener is reachable, and that both nodes have the same \
                     cookie and cluster name (their logs say which)"
                )));
            } else {
                self.joins.push((a, deadline, reply));
            }
        }
    }

    fn leave(&mut self) -> Result<(), String> {
        let up = self.up_peers();
        for name in &up {
            self.send_to(
                name,
                Control::Leaving {
                    from: self.me.clone(),
                },
            );
        }
        for name in self.peers.keys().cloned().collect::<Vec<_>>() {
            self.remove_peer(&name);
        }
        self.seeds.clear();
        self.left = true;
        // Let the Leaving messages out before the links close.
        let sessions: Vec<_> = self.sessions.values().map(|s| s.actor.clone()).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for s in sessions {
                s.stop(Some("left the cluster".into()));
            }
        });
        info!(told = up.len(), "cluster_left");
        Ok(())
    }

    fn force_leave(&mut self, node: &str, force: bool) -> Result<(), String> {
        if node == self.me {
            return Err("this is the node itself: use `roost ctl cluster leave`".into());
        }
        match self.peers.get(node).map(|p| &p.link) {
            None => Err(format!("{node} is not a member of this cluster")),
            Some(Link::Up { .. }) => Err(format!(
                "{node} is up: run `roost ctl cluster leave` on it, or stop it first"
            )),
            Some(Link::Down { .. }) => {
                if !force {
                    self.quorum_check(node)?;
                }
                self.remove_peer(node);
                for name in self.up_peers() {
                    self.send_to(
                        &name,
                        Control::Forget {
                            from: self.me.clone(),
                            node: node.to_owned(),
                        },
                    );
                }
                info!(%node, "cluster_member_force_left");
                Ok(())
            }
        }
    }

    /// Whether forgetting `node` (down here) is safe from this side: refused
    /// when another member still sees it up (we are cut off from it, not
    /// it from the cluster), or when this node reaches only a minority of
    /// the members (the majority may see it, and would keep it).
    fn quorum_check(&self, node: &str) -> Result<(), String> {
        let mut seers: Vec<&str> = self
            .seen_by
            .iter()
            .filter(|(_, up)| up.contains(node))
            .map(|(n, _)| n.as_str())
            .collect();
        seers.sort_unstable();
        if !seers.is_empty() {
            return Err(format!(
                "{node} is down here but up for {}: this node is cut off from it, \
                 a partition, not a dead node; run force-leave where it is down for \
                 everyone, or add --force",
                seers.join(", ")
            ));
        }
        let members = self.peers.len() + 1;
        let reachable = self.up_peers().len() + 1;
        if reachable * 2 <= members {
            return Err(format!(
                "this node is in a minority: it reaches {reachable} of {members} members \
                 (itself included), so the others may still see {node}; run force-leave \
                 on the majority side, or add --force"
            ));
        }
        Ok(())
    }

    /// Forget a member entirely: routes, queue, record.
    fn remove_peer(&mut self, name: &str) {
        self.seen_by.remove(name);
        self.tell_partition(PartitionMsg::PeerRemoved {
            peer: name.to_owned(),
        });
        if let Some(p) = self.peers.remove(name) {
            if let Link::Up { session, .. } = p.link {
                let s = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    s.stop(Some("member removed".into()));
                });
            }
        }
        let sink = forward::sink_name(name);
        self.shared.ctx.routes.detach_sink(&sink);
        self.shared.ctx.routes.clear_remote_shared(&sink);
        self.shared.ctx.routes.set_broadcast(&sink, None);
        if let Some(link) = self.shared.links.write().remove(name) {
            match link.mailbox.discard() {
                Ok(0) => {}
                Ok(dropped) => warn!(peer = %name, dropped, "cluster_forward_queue_discarded"),
                Err(e) => warn!(peer = %name, error = %e, "cluster_forward_queue_discard_failed"),
            }
        }
        if let Some(storage) = &self.shared.storage {
            let mut b = Batch::new();
            b.delete_cluster(&format!("{MEMBER_PREFIX}{name}"));
            b.delete_cluster(&format!("{ROUTES_PREFIX}{name}"));
            if let Err(e) = blocking(|| storage.commit(b)) {
                warn!(peer = %name, error = %e, "cluster_member_store_failed");
            }
        }
    }

    // ---- persistence -------------------------------------------------------

    fn load_members(&mut self) {
        let Some(storage) = &self.shared.storage else {
            return;
        };
        match storage.load_cluster::<MemberRecord>(MEMBER_PREFIX) {
            Ok(records) => {
                for (key, r) in records {
                    let name = key[MEMBER_PREFIX.len()..].to_owned();
                    if name == self.me {
                        continue;
                    }
                    self.peers.insert(
                        name,
                        Peer {
                            address: r.address,
                            first_join_ms: r.first_join_ms,
                            last_seen_ms: r.last_seen_ms,
                            link: Link::Down {
                                reason: "not reached since this node started".into(),
                            },
                            dial: Dial::now(),
                            incarnation: 0,
                            routes: (0, 0, BTreeSet::new()),
                            routes_wanted_at: None,
                        },
                    );
                }
            }
            Err(e) => error!(error = %e, "cluster_members_unreadable: starting with none"),
        }
        match storage.load_cluster::<StoredRoutes>(ROUTES_PREFIX) {
            Ok(records) => {
                for (key, r) in records {
                    if let Some(p) = self.peers.get_mut(&key[ROUTES_PREFIX.len()..]) {
                        p.routes.2 = r.filters.into_iter().collect();
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cluster_routes_unreadable: waiting for the peers' snapshots")
            }
        }
    }

    /// Store the routes of the members whose routes changed (at most once a
    /// second: a busy peer's subscriptions change often).
    fn persist_routes(&mut self) {
        let Some(storage) = &self.shared.storage else {
            self.routes_dirty.clear();
            return;
        };
        let mut b = Batch::new();
        for name in std::mem::take(&mut self.routes_dirty) {
            if let Some(p) = self.peers.get(&name) {
                let filters = p.routes.2.iter().cloned().collect();
                b.put_cluster(&format!("{ROUTES_PREFIX}{name}"), &StoredRoutes { filters });
            }
        }
        if let Err(e) = blocking(|| storage.commit(b)) {
            warn!(error = %e, "cluster_routes_store_failed");
        }
    }

    fn persist_member(&self, name: &str) {
        let (Some(storage), Some(p)) = (&self.shared.storage, self.peers.get(name)) else {
            return;
        };
        if p.first_join_ms == 0 {
            return;
        }
        let mut b = Batch::new();
        b.put_cluster(
            &format!("{MEMBER_PREFIX}{name}"),
            &MemberRecord {
                address: p.address.clone(),
                first_join_ms: p.first_join_ms,
                last_seen_ms: p.last_seen_ms,
            },
        );
        if let Err(e) = blocking(|| storage.commit(b)) {
            warn!(peer = %name, error = %e, "cluster_member_store_failed");
        }
    }

    // ---- status ------------------------------------------------------------

    fn status(&self) -> ClusterStatus {
        let s = self.settings();
        let mut members = vec![MemberStatus {
            node: self.me.clone(),
            status: if self.server.is_some() {
                "up"
            } else {
                "listen failed"
            }
            .into(),
            address: s.advertise.clone(),
            local: true,
            first_join_ms: self.shared.incarnation,
            last_seen_ms: unix_ms(),
            reason: String::new(),
            routes: self.routes_sent.len() as u64,
            forward_queue: 0,
            forward_dropped: 0,
        }];
        for (name, p) in &self.peers {
            let (status, reason) = match &p.link {
                Link::Up { .. } => ("up", String::new()),
                Link::Down { .. } if p.first_join_ms == 0 => ("joining", String::new()),
                Link::Down { reason } => ("down", reason.clone()),
            };
            let (queue, dropped) = self
                .shared
                .link(name)
                .map(|l| {
                    let st = l.mailbox.stats();
                    (
                        st.memory_messages + st.disk_messages + st.unacked_messages,
                        st.dropped_queue_full,
                    )
                })
                .unwrap_or_default();
            members.push(MemberStatus {
                node: name.clone(),
                status: status.into(),
                address: p.address.clone(),
                local: false,
                first_join_ms: p.first_join_ms,
                last_seen_ms: p.last_seen_ms,
                reason,
                routes: p.routes.2.len() as u64,
                forward_queue: queue,
                forward_dropped: dropped,
            });
        }
        ClusterStatus {
            cluster: s.cluster_name.clone(),
            node: self.me.clone(),
            listen: s.listen.to_string(),
            discovery: describe(&s.discovery),
            members,
        }
    }
}

/// Where we dial `name`: `cluster.peer_addresses` if it names it, else the
/// address it advertises.
fn dial_address<'a>(
    settings: &'a crate::settings::ClusterSettings,
    name: &str,
    p: &'a Peer,
) -> &'a str {
    settings
        .peer_addresses
        .get(name)
        .map_or(p.address.as_str(), String::as_str)
}

fn describe(d: &DiscoveryConfig) -> String {
    match d {
        DiscoveryConfig::Manual => "manual".into(),
        DiscoveryConfig::Static { seeds } => format!(
            "static: {}",
            seeds
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        DiscoveryConfig::Dns(d) => format!("dns: {} {}", d.record, d.name),
    }
}
