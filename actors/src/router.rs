//! The route table and the router actor.
//!
//! Reads are on the publish path: the publishing connection matches the
//! topic against the shared [`RouteTable`] under a read lock and pushes one
//! delivery per matching session into that session's [`Inbox`], with no actor
//! hop. Writes (subscribe, unsubscribe, a session going away) go through the
//! [`Router`] actor, which serializes them; the cluster issue (#4) hangs route
//! replication there.
//!
//! Delivery rules applied here:
//! - overlapping subscriptions of one client give one copy at the highest
//!   granted QoS, carrying every matching subscription identifier
//!   [MQTT-3.3.4-2], [MQTT-3.3.4-4];
//! - No Local subscriptions skip the client's own messages [MQTT-3.8.3-3];
//! - the RETAIN flag is kept only for Retain As Published subscriptions
//!   [MQTT-3.3.1-12/13];
//! - each shared group `$share/g/f` gets one copy, to one member, chosen
//!   round robin [MQTT-4.8.2].
//!
//! Besides sessions, a route can target a [`RouteSink`]: a node-local
//! consumer that is not a client (a bridge's overflow mailbox, issue #6).
//! Sinks live in a table of their own: they are not subscriptions (the
//! counts and listings here are sessions' only), they are written directly
//! by their owner rather than through the router actor (they are never
//! replicated to peers), and a router restart keeps them (their owner is not
//! under `broker` and would not subscribe again). Each matching sink gets one
//! copy per message however many of its filters match.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use roost_protocol::session::Subscription;
use roost_protocol::topic;
use roost_protocol::trie::SubscriptionTrie;
use roost_protocol::{ClientId, Delivery, DeliveryOpts, Message, QoS};

use crate::inbox::Inbox;
use crate::valve::Valve;

/// One subscription as the router sees it.
#[derive(Clone)]
pub struct RouteEntry {
    pub subscription: Subscription,
    pub inbox: Arc<Inbox>,
}

/// A node-local consumer of routed messages that is not a session (a
/// bridge's mailbox). `offer` runs inline on the publisher's actor for every
/// matching message: it must not wait for its consumer.
pub trait RouteSink: Send + Sync {
    fn offer(&self, msg: &Arc<Message>);

    /// The message was given to this sink as the one member of shared
    /// group `group` on `filter` (a cluster peer with members of that
    /// group delivers it to one of them).
    fn offer_shared(&self, msg: &Arc<Message>, _group: &str, _filter: &str) {
        self.offer(msg);
    }

    /// The sink's flow-control valve, if its consumer can slow publishers
    /// down (a cluster peer); `None` never does (a bridge: producers never
    /// wait for it, its mailbox spills to disk instead).
    fn valve(&self) -> Option<&Arc<Valve>> {
        None
    }
}

/// Where the messages for a client whose session just moved to another
/// node go for a short while (issue #5): the cluster forwards them to that
/// client on the new node. Runs inline on the publisher's actor: must not
/// wait.
pub trait ClientRedirect: Send + Sync {
    /// `also_routed`: the message also went to the same node through its
    /// routes (sink [`ClientRedirect::target`]); that node delivers this
    /// copy only if its routing did not already reach the client.
    fn offer_to(
        &self,
        client: &ClientId,
        msg: &Arc<Message>,
        opts: DeliveryOpts,
        also_routed: bool,
    );

    /// The name of the route sink of the node the client moved to.
    fn target(&self) -> &str;
}

/// How long what routes here for a session that moved to another node
/// follows it there: far longer than routes take to propagate. A message
/// from a peer redirected in that time extends it by as much again (up to
/// [`REDIRECT_MAX_LIFE`]): peers' forward queues to this node may still
/// hold a backlog routed here before the move (a slow or flapping link),
/// and it must follow the client however late it arrives.
pub const REDIRECT_TTL: Duration = Duration::from_secs(10);

/// Longest a redirect lives, however long peers keep sending.
pub const REDIRECT_MAX_LIFE: Duration = Duration::from_secs(300);

/// The redirects of one client, taken out ([`RouteTable::take_redirects`]).
pub struct TakenRedirects {
    client: ClientId,
    entries: Vec<(String, Redirect)>,
}

impl TakenRedirects {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One filter of a moved session, redirected until `until`.
struct Redirect {
    subscription: Subscription,
    sink: Arc<dyn ClientRedirect>,
    created: std::time::Instant,
    /// Milliseconds after `created` (extended by messages from peers).
    until_ms: AtomicU64,
}

impl Redirect {
    fn live(&self, now: std::time::Instant) -> bool {
        now.saturating_duration_since(self.created).as_millis() as u64
            <= self.until_ms.load(Ordering::Relaxed)
    }

    /// Live for [`REDIRECT_TTL`] from `now`, within [`REDIRECT_MAX_LIFE`].
    fn extend(&self, now: std::time::Instant) {
        let age = now.saturating_duration_since(self.created);
        let to = (age + REDIRECT_TTL).min(REDIRECT_MAX_LIFE).as_millis() as u64;
        self.until_ms.fetch_max(to, Ordering::Relaxed);
    }
}

/// A consumer the publisher should wait for before reading more.
#[derive(Clone)]
pub enum Congested {
    Session(Arc<Inbox>),
    Sink(Arc<Valve>),
}

impl Congested {
    pub fn same(&self, other: &Congested) -> bool {
        match (self, other) {
            (Congested::Session(a), Congested::Session(b)) => Arc::ptr_eq(a, b),
            (Congested::Sink(a), Congested::Sink(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Wait until it is relieved (or stalls), at most `limit`.
    pub async fn wait_relieved(&self, limit: Duration) -> Duration {
        match self {
            Congested::Session(inbox) => inbox.wait_relieved(limit).await,
            Congested::Sink(valve) => valve.wait_relieved(limit).await,
        }
    }

    /// Wait for each of `congested` in turn, `limit` for all of them (a
    /// publisher's pause). Returns how long it waited.
    pub async fn wait_all(congested: Vec<Congested>, limit: Duration) -> Duration {
        if congested.is_empty() || limit.is_zero() {
            return Duration::ZERO;
        }
        let start = std::time::Instant::now();
        for c in congested {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            c.wait_relieved(left).await;
        }
        start.elapsed()
    }
}

/// A remote node as a member of a shared group: (group, sink name).
type RemoteSharedKey = (ByteString, ByteString);

/// Shared-subscription member key: (group, client).
type SharedKey = (ByteString, ClientId);

#[derive(Default)]
struct Tables {
    direct: SubscriptionTrie<ClientId, RouteEntry>,
    shared: SubscriptionTrie<SharedKey, RouteEntry>,
}

/// The route table: shared by every connection (readers) and the router
/// actor (the only writer of session routes).
#[derive(Default)]
pub struct RouteTable {
    tables: RwLock<Tables>,
    /// Sink routes, keyed by sink name (see the module doc). Not cleared
    /// with the session routes.
    sinks: RwLock<SubscriptionTrie<ByteString, Arc<dyn RouteSink>>>,
    /// Sinks that get every retained message whatever its topic (a cluster
    /// peer keeps a copy of every retained message), once per message.
    broadcast: RwLock<Vec<(ByteString, Arc<dyn RouteSink>)>>,
    /// Shared groups with members on other nodes: each such node counts as
    /// one member of the group, so each message goes to one member
    /// cluster-wide.
    remote_shared: RwLock<SubscriptionTrie<RemoteSharedKey, Arc<dyn RouteSink>>>,
    /// Sessions that moved to another node, for a few seconds: what still
    /// routes here for them (a peer that has not seen the move yet, a
    /// publisher here) follows them. Checked only while not empty.
    redirects: RwLock<SubscriptionTrie<ClientId, Redirect>>,
    has_redirects: std::sync::atomic::AtomicBool,
    round_robin: AtomicUsize,
    /// Bumped by every write of session routes: the cluster layer exports
    /// the local filters when it moves (`local_filters`).
    version: AtomicU64,
    /// Called after every such write (the cluster layer schedules an
    /// export): must not block.
    on_change: RwLock<Option<ChangeHook>>,
}

type ChangeHook = Arc<dyn Fn() + Send + Sync>;

/// A delivery to a session whose queue is durable: the publisher stores it
/// (one batch for all of them) before handing it over with its seq.
pub struct ToStore {
    pub client: ClientId,
    pub inbox: Arc<Inbox>,
    pub opts: DeliveryOpts,
}

/// What routing one message did.
#[derive(Default)]
pub struct RouteOutcome {
    pub delivered: usize,
    /// Deliveries refused because a session's inbox was full.
    pub dropped: usize,
    /// Deliveries refused because a persistent session's durable queue was
    /// full (already counted in `messages_dropped_queue_full`).
    pub dropped_queue_full: usize,
    /// Sessions and sinks it went to that are congested (see `Inbox`,
    /// `Valve`): the publisher should wait for them. Empty (no allocation)
    /// in the common case.
    pub congested: Vec<Congested>,
}

impl RouteTable {
    pub fn new() -> Arc<RouteTable> {
        Arc::new(RouteTable::default())
    }

    /// Number of subscriptions (direct + shared members).
    pub fn subscription_count(&self) -> usize {
        let t = self.tables.read();
        t.direct.len() + t.shared.len()
    }

    /// Distinct filters with at least one subscriber.
    pub fn route_count(&self) -> usize {
        let t = self.tables.read();
        t.direct.filter_count() + t.shared.filter_count()
    }

    /// Changes whenever a session route is added or removed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Call `hook` after every change of the session routes (replacing
    /// any previous hook).
    pub fn set_on_change(&self, hook: Option<ChangeHook>) {
        *self.on_change.write() = hook;
    }

    /// Bump the version and tell the hook (with the tables unlocked).
    fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        let hook = self.on_change.read().clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// The distinct filters of this node's sessions, shared ones as
    /// `$share/<group>/<filter>`: what the cluster replicates to peers.
    pub fn local_filters(&self) -> BTreeSet<String> {
        let t = self.tables.read();
        let mut out: BTreeSet<String> = t.direct.iter().map(|(f, _, _)| f.to_string()).collect();
        out.extend(
            t.shared
                .iter()
                .map(|(f, (g, _), _)| format!("$share/{g}/{f}")),
        );
        out
    }

    /// Every (filter, client) subscription, for listing.
    pub fn list(&self) -> Vec<(String, ClientId)> {
        let t = self.tables.read();
        let mut v: Vec<_> = t
            .direct
            .iter()
            .map(|(f, c, _)| (f.to_string(), c.clone()))
            .collect();
        v.extend(
            t.shared
                .iter()
                .map(|(f, (g, c), _)| (format!("$share/{g}/{f}"), c.clone())),
        );
        v
    }

    /// Every subscription with its granted QoS, for the management API:
    /// (filter as subscribed, `$share/<group>/` included; client; QoS).
    pub fn list_with_qos(&self) -> Vec<(String, ClientId, QoS)> {
        let t = self.tables.read();
        let mut v: Vec<_> = t
            .direct
            .iter()
            .map(|(f, c, e)| (f.to_string(), c.clone(), e.subscription.options.qos))
            .collect();
        v.extend(t.shared.iter().map(|(f, (g, c), e)| {
            (
                format!("$share/{g}/{f}"),
                c.clone(),
                e.subscription.options.qos,
            )
        }));
        v
    }

    /// Route one message to every matching session. Deliveries to sessions
    /// whose queue is durable (see `Inbox::wants_store`) are not pushed but
    /// added to `to_store`, and counted as delivered.
    pub fn route(&self, msg: &Arc<Message>, to_store: &mut Vec<ToStore>) -> RouteOutcome {
        self.route_with(msg, to_store, true)
    }

    /// [`RouteTable::route`] to this node's sessions only: a message that
    /// came from a cluster peer is not offered to sinks (peers and bridges
    /// get a message from the node it was published on).
    pub fn route_sessions(&self, msg: &Arc<Message>, to_store: &mut Vec<ToStore>) -> RouteOutcome {
        self.route_with(msg, to_store, false)
    }

    fn route_with(
        &self,
        msg: &Arc<Message>,
        to_store: &mut Vec<ToStore>,
        sinks: bool,
    ) -> RouteOutcome {
        let mut out = RouteOutcome::default();
        let t = self.tables.read();
        let mut hits: Vec<(&ClientId, &RouteEntry)> = Vec::new();
        let mut filters = 0usize;
        let mut last_filter: *const u8 = std::ptr::null();
        t.direct
            .for_each_match(&msg.topic, |filter, client, entry| {
                if entry.subscription.options.no_local && *client == msg.publisher {
                    return;
                }
                if filter.as_ptr() != last_filter {
                    filters += 1;
                    last_filter = filter.as_ptr();
                }
                hits.push((client, entry));
            });
        if filters <= 1 {
            // One filter: every client appears once; no merging needed.
            for (client, e) in &hits {
                let opts = delivery_opts(msg, &e.subscription);
                out.offer(client, &e.inbox, msg, opts, to_store);
            }
        } else {
            self.route_merged(msg, &hits, &mut out, to_store);
        }
        self.route_shared(&t, msg, &mut out, to_store, sinks);
        drop(t);
        let redirects = self.has_redirects.load(Ordering::Acquire);
        let mut offered = Vec::new();
        if sinks {
            self.route_sinks(msg, &mut out, redirects.then_some(&mut offered));
        }
        if redirects {
            self.route_redirects(msg, &mut out, &offered, !sinks);
        }
        out
    }

    /// Messages for moved sessions (one copy per client, as for sessions:
    /// the first matching filter's options; overlapping filters of one
    /// moved client are rare and short-lived).
    /// `from_peer`: the message came from a cluster peer (its forward
    /// queue to this node): the redirect lives on while such keep coming.
    fn route_redirects(
        &self,
        msg: &Arc<Message>,
        out: &mut RouteOutcome,
        offered: &[ByteString],
        from_peer: bool,
    ) {
        let now = std::time::Instant::now();
        let redirects = self.redirects.read();
        let mut done: Vec<&ClientId> = Vec::new();
        redirects.for_each_match(&msg.topic, |_, client, r| {
            if !r.live(now) {
                return;
            }
            if from_peer {
                r.extend(now);
            }
            if done.contains(&client)
                || (r.subscription.options.no_local && *client == msg.publisher)
            {
                return;
            }
            done.push(client);
            let also_routed = offered
                .iter()
                .any(|n| n.as_ref() as &str == r.sink.target());
            r.sink.offer_to(
                client,
                msg,
                delivery_opts(msg, &r.subscription),
                also_routed,
            );
            out.delivered += 1;
        });
    }

    /// Send what routes to `client`'s `subscriptions` here to `sink` for
    /// `ttl` (its session moved to another node).
    pub fn add_redirect(
        &self,
        client: &ClientId,
        subscriptions: Vec<(String, Subscription)>,
        sink: Arc<dyn ClientRedirect>,
        ttl: Duration,
    ) {
        let created = std::time::Instant::now();
        let until_ms = ttl.min(REDIRECT_MAX_LIFE).as_millis() as u64;
        let mut redirects = self.redirects.write();
        for (filter, subscription) in subscriptions {
            redirects.insert(
                &filter,
                client.clone(),
                Redirect {
                    subscription,
                    sink: sink.clone(),
                    created,
                    until_ms: AtomicU64::new(until_ms),
                },
            );
        }
        self.has_redirects
            .store(!redirects.is_empty(), Ordering::Release);
    }

    /// Whether one of `client`'s subscriptions here matches `topic`.
    pub fn client_matches(&self, client: &ClientId, topic: &str) -> bool {
        let mut hit = false;
        self.tables
            .read()
            .direct
            .for_each_match(topic, |_, c, _| hit |= c == client);
        hit
    }

    /// Take the redirects of `client` out: it connects here again and
    /// its session may come back; [`RouteTable::restore_redirects`] puts
    /// them back if it did not (its node could not be asked).
    pub fn take_redirects(&self, client: &ClientId) -> TakenRedirects {
        let mut taken = TakenRedirects {
            client: client.clone(),
            entries: Vec::new(),
        };
        if !self.has_redirects.load(Ordering::Acquire) {
            return taken;
        }
        let mut redirects = self.redirects.write();
        let gone: Vec<String> = redirects
            .iter()
            .filter(|(_, c, _)| *c == client)
            .map(|(f, _, _)| f.to_owned())
            .collect();
        for f in gone {
            if let Some(r) = redirects.remove(&f, client) {
                taken.entries.push((f, r));
            }
        }
        self.has_redirects
            .store(!redirects.is_empty(), Ordering::Release);
        taken
    }

    /// Where this node sends what routes here for `client` (a live
    /// redirect: its session moved on from here), if anywhere.
    pub fn client_redirect(&self, client: &ClientId) -> Option<Arc<dyn ClientRedirect>> {
        if !self.has_redirects.load(Ordering::Acquire) {
            return None;
        }
        let now = std::time::Instant::now();
        self.redirects
            .read()
            .iter()
            .find(|(_, c, r)| *c == client && r.live(now))
            .map(|(_, _, r)| r.sink.clone())
    }

    /// Put back what [`RouteTable::take_redirects`] took (their times as
    /// they were).
    pub fn restore_redirects(&self, taken: TakenRedirects) {
        if taken.entries.is_empty() {
            return;
        }
        let mut redirects = self.redirects.write();
        for (filter, r) in taken.entries {
            redirects.insert(&filter, taken.client.clone(), r);
        }
        self.has_redirects.store(true, Ordering::Release);
    }

    /// Drop the redirects whose time is up.
    pub fn expire_redirects(&self) {
        if !self.has_redirects.load(Ordering::Acquire) {
            return;
        }
        let now = std::time::Instant::now();
        let mut redirects = self.redirects.write();
        let gone: Vec<(String, ClientId)> = redirects
            .iter()
            .filter(|(_, _, r)| !r.live(now))
            .map(|(f, c, _)| (f.to_owned(), c.clone()))
            .collect();
        for (f, c) in gone {
            redirects.remove(&f, &c);
        }
        self.has_redirects
            .store(!redirects.is_empty(), Ordering::Release);
    }

    /// One copy to each matching sink. Allocation-free unless two distinct
    /// sinks match the same message.
    /// `offered`: the names of the sinks it went to (while redirects exist).
    fn route_sinks(
        &self,
        msg: &Arc<Message>,
        out: &mut RouteOutcome,
        offered: Option<&mut Vec<ByteString>>,
    ) {
        let sinks = self.sinks.read();
        if sinks.is_empty() {
            if msg.retain {
                self.broadcast_retained(msg, &[]);
            }
            return;
        }
        let mut first: Option<(&ByteString, &Arc<dyn RouteSink>)> = None;
        let mut more: Vec<(&ByteString, &Arc<dyn RouteSink>)> = Vec::new();
        sinks.for_each_match(&msg.topic, |_, name, sink| {
            let seen = |(n, _): &(&ByteString, _)| *n == name;
            if first.as_ref().is_some_and(seen) || more.iter().any(seen) {
                return;
            }
            if first.is_none() {
                first = Some((name, sink));
            } else {
                more.push((name, sink));
            }
        });
        if msg.retain {
            let names: Vec<&ByteString> = first.iter().chain(&more).map(|(n, _)| *n).collect();
            self.broadcast_retained(msg, &names);
        }
        if let Some(offered) = offered {
            offered.extend(first.iter().chain(&more).map(|(n, _)| (*n).clone()));
        }
        for (_, sink) in first.into_iter().chain(more) {
            sink.offer(msg);
            out.offered_sink(sink);
            out.delivered += 1;
        }
    }

    /// A retained message to every broadcast sink not already given it by
    /// a route (`offered`). Not counted as a delivery: it keeps the peer's
    /// retained store in step, it is not a subscriber's copy.
    fn broadcast_retained(&self, msg: &Arc<Message>, offered: &[&ByteString]) {
        let broadcast = self.broadcast.read();
        for (name, sink) in broadcast.iter() {
            if !offered.contains(&name) {
                sink.offer(msg);
            }
        }
    }

    /// Give `sink` every retained message (`Some`), or stop (`None`).
    pub fn set_broadcast(&self, name: &str, sink: Option<Arc<dyn RouteSink>>) {
        let mut b = self.broadcast.write();
        b.retain(|(n, _)| n != name);
        if let Some(sink) = sink {
            b.push((ByteString::from(name), sink));
        }
    }

    /// Add routes to the sink `name` (keeping its others).
    pub fn add_sink_routes(&self, name: &str, filters: &[String], sink: Arc<dyn RouteSink>) {
        let key = ByteString::from(name);
        let mut sinks = self.sinks.write();
        for f in filters {
            sinks.insert(f, key.clone(), sink.clone());
        }
    }

    /// Remove some routes of the sink `name`.
    pub fn remove_sink_routes(&self, name: &str, filters: &[String]) {
        let key = ByteString::from(name);
        let mut sinks = self.sinks.write();
        for f in filters {
            sinks.remove(f, &key);
        }
    }

    /// Route messages matching any of `filters` to `sink` (replacing the
    /// routes of a sink of the same name).
    pub fn attach_sink(&self, name: &str, filters: &[String], sink: Arc<dyn RouteSink>) {
        let key = ByteString::from(name);
        let mut sinks = self.sinks.write();
        remove_sink_routes(&mut sinks, &key);
        for f in filters {
            sinks.insert(f, key.clone(), sink.clone());
        }
    }

    /// Remove every route of the sink `name`.
    pub fn detach_sink(&self, name: &str) {
        remove_sink_routes(&mut self.sinks.write(), &ByteString::from(name));
    }

    /// Filters routed to sinks: (filter, sink name).
    pub fn list_sinks(&self) -> Vec<(String, String)> {
        self.sinks
            .read()
            .iter()
            .map(|(f, k, _)| (f.to_string(), k.to_string()))
            .collect()
    }

    /// Several filters matched: one copy per client, merged. [MQTT-3.3.4-2]
    fn route_merged(
        &self,
        msg: &Arc<Message>,
        hits: &[(&ClientId, &RouteEntry)],
        out: &mut RouteOutcome,
        to_store: &mut Vec<ToStore>,
    ) {
        let mut merged: HashMap<&ClientId, (DeliveryOpts, &Arc<Inbox>)> =
            HashMap::with_capacity(hits.len());
        for (client, e) in hits {
            let opts = delivery_opts(msg, &e.subscription);
            match merged.get_mut(client) {
                None => {
                    merged.insert(client, (opts, &e.inbox));
                }
                Some((m, _)) => {
                    m.qos = m.qos.max(opts.qos);
                    m.retain |= opts.retain;
                    m.subscription_ids.extend(opts.subscription_ids);
                }
            }
        }
        for (client, (opts, inbox)) in merged {
            out.offer(client, inbox, msg, opts, to_store);
        }
    }

    fn route_shared(
        &self,
        t: &Tables,
        msg: &Arc<Message>,
        out: &mut RouteOutcome,
        to_store: &mut Vec<ToStore>,
        remote: bool,
    ) {
        let remote_shared = self.remote_shared.read();
        if t.shared.is_empty() && (!remote || remote_shared.is_empty()) {
            return;
        }
        type Members<'a> = (
            Vec<(&'a ClientId, &'a RouteEntry)>,
            Vec<&'a Arc<dyn RouteSink>>,
        );
        let mut groups: HashMap<(&str, &ByteString), Members<'_>> = HashMap::new();
        t.shared
            .for_each_match(&msg.topic, |filter, (group, client), entry| {
                groups
                    .entry((filter, group))
                    .or_default()
                    .0
                    .push((client, entry));
            });
        if remote {
            remote_shared.for_each_match(&msg.topic, |filter, (group, _), sink| {
                groups.entry((filter, group)).or_default().1.push(sink);
            });
        }
        for ((filter, group), (members, nodes)) in groups {
            let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
            let n = members.len() + nodes.len();
            if start % n >= members.len() {
                // Another node's turn: it gives the message to one of its
                // members of the group.
                let node = nodes[start % n - members.len()];
                node.offer_shared(msg, group, filter);
                out.offered_sink(node);
                out.delivered += 1;
                continue;
            }
            self.pick_shared(msg, &members, start, out, to_store);
        }
    }

    /// One of `members` (round robin from `start`): a congested or full one
    /// is skipped while another can take the message.
    fn pick_shared(
        &self,
        msg: &Arc<Message>,
        members: &[(&ClientId, &RouteEntry)],
        start: usize,
        out: &mut RouteOutcome,
        to_store: &mut Vec<ToStore>,
    ) {
        let n = members.len();
        let (client, pick) = (0..n)
            .map(|i| members[(start + i) % n])
            .find(|(_, e)| !e.inbox.congested())
            .unwrap_or(members[start % n]);
        let opts = delivery_opts(msg, &pick.subscription);
        out.offer(client, &pick.inbox, msg, opts, to_store);
    }

    /// A message another node picked this node for, as the member of
    /// shared group `group` on `filter`: to one local member of it (none
    /// left: not delivered, `delivered` stays 0).
    pub fn route_shared_member(
        &self,
        msg: &Arc<Message>,
        group: &str,
        filter: &str,
        to_store: &mut Vec<ToStore>,
    ) -> RouteOutcome {
        let mut out = RouteOutcome::default();
        let t = self.tables.read();
        let mut members = Vec::new();
        t.shared
            .for_each_match(&msg.topic, |f, (g, client), entry| {
                if f == filter && g == group {
                    members.push((client, entry));
                }
            });
        if !members.is_empty() {
            let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
            self.pick_shared(msg, &members, start, &mut out, to_store);
        }
        out
    }

    /// Count another node (sink `name`) as a member of shared groups:
    /// `$share/<group>/<filter>` each.
    pub fn add_remote_shared(&self, name: &str, shared: &[String], sink: Arc<dyn RouteSink>) {
        let mut r = self.remote_shared.write();
        for s in shared {
            if let Ok(Some((group, f))) = topic::parse_shared(s) {
                r.insert(
                    f,
                    (ByteString::from(group), ByteString::from(name)),
                    sink.clone(),
                );
            }
        }
    }

    pub fn remove_remote_shared(&self, name: &str, shared: &[String]) {
        let mut r = self.remote_shared.write();
        for s in shared {
            if let Ok(Some((group, f))) = topic::parse_shared(s) {
                r.remove(f, &(ByteString::from(group), ByteString::from(name)));
            }
        }
    }

    /// Forget every shared-group membership of sink `name`.
    pub fn clear_remote_shared(&self, name: &str) {
        let mut r = self.remote_shared.write();
        let mine: Vec<(String, RemoteSharedKey)> = r
            .iter()
            .filter(|(_, (_, n), _)| n == name)
            .map(|(f, k, _)| (f.to_string(), k.clone()))
            .collect();
        for (f, k) in mine {
            r.remove(&f, &k);
        }
    }

    fn insert(&self, client: ClientId, filter: &str, entry: RouteEntry) {
        {
            let mut t = self.tables.write();
            match topic::parse_shared(filter) {
                Ok(Some((group, f))) => {
                    t.shared.insert(f, (ByteString::from(group), client), entry);
                }
                _ => {
                    t.direct.insert(filter, client, entry);
                }
            }
        }
        self.changed();
    }

    fn remove(&self, client: &ClientId, filter: &str) -> bool {
        let removed = {
            let mut t = self.tables.write();
            match topic::parse_shared(filter) {
                Ok(Some((group, f))) => t
                    .shared
                    .remove(f, &(ByteString::from(group), client.clone()))
                    .is_some(),
                _ => t.direct.remove(filter, client).is_some(),
            }
        };
        self.changed();
        removed
    }

    fn remove_client(&self, client: &ClientId) {
        let filters: Vec<String> = self
            .list()
            .into_iter()
            .filter(|(_, c)| c == client)
            .map(|(f, _)| f)
            .collect();
        for f in filters {
            self.remove(client, &f);
        }
    }

    fn clear(&self) {
        *self.tables.write() = Tables::default();
        self.changed();
    }
}

impl RouteOutcome {
    fn offer(
        &mut self,
        client: &ClientId,
        inbox: &Arc<Inbox>,
        msg: &Arc<Message>,
        opts: DeliveryOpts,
        to_store: &mut Vec<ToStore>,
    ) {
        if inbox.wants_store(opts.qos) {
            to_store.push(ToStore {
                client: client.clone(),
                inbox: inbox.clone(),
                opts,
            });
            self.count(inbox, true);
        } else {
            let pushed = inbox.push(Delivery::new(msg.clone(), opts));
            self.count(inbox, pushed);
        }
    }

    fn count(&mut self, inbox: &Arc<Inbox>, pushed: bool) {
        if pushed {
            self.delivered += 1;
        } else {
            self.dropped += 1;
        }
        if inbox.congested() {
            self.add_congested(Congested::Session(inbox.clone()));
        }
    }

    /// A sink was offered the message: note it if it is congested.
    fn offered_sink(&mut self, sink: &Arc<dyn RouteSink>) {
        if let Some(valve) = sink.valve() {
            if valve.congested() {
                self.add_congested(Congested::Sink(valve.clone()));
            }
        }
    }

    /// Add `c` unless it is there already.
    pub fn add_congested(&mut self, c: Congested) {
        if !self.congested.iter().any(|i| i.same(&c)) {
            self.congested.push(c);
        }
    }
}

fn remove_sink_routes(
    sinks: &mut SubscriptionTrie<ByteString, Arc<dyn RouteSink>>,
    key: &ByteString,
) {
    let old: Vec<String> = sinks
        .iter()
        .filter(|(_, k, _)| *k == key)
        .map(|(f, _, _)| f.to_string())
        .collect();
    for f in old {
        sinks.remove(&f, key);
    }
}

fn delivery_opts(msg: &Message, sub: &Subscription) -> DeliveryOpts {
    DeliveryOpts {
        qos: msg.qos.min(sub.options.qos),
        retain: msg.retain && sub.options.retain_as_published,
        subscription_ids: sub.identifier.into_iter().collect(),
    }
}

/// Messages to the router actor (route table writes).
pub enum RouterMsg {
    Subscribe {
        client: ClientId,
        filter: ByteString,
        entry: RouteEntry,
        reply: RpcReplyPort<()>,
    },
    Unsubscribe {
        client: ClientId,
        filter: ByteString,
        reply: RpcReplyPort<bool>,
    },
    /// A session ended: drop its routes (all of them when the filters are
    /// unknown, e.g. after the session actor crashed).
    RemoveClient {
        client: ClientId,
        filters: Option<Vec<ByteString>>,
        reply: Option<RpcReplyPort<()>>,
    },
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for RouterMsg {}

/// The router actor: the single writer of the route table.
pub struct Router;

pub struct RouterArgs {
    pub table: Arc<RouteTable>,
    pub slot: Arc<RwLock<Option<ActorRef<RouterMsg>>>>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = Arc<RouteTable>;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A restarted router starts empty: the sessions after it in the
        // rest_for_one broker supervisor restart too and subscribe again.
        args.table.clear();
        *args.slot.write() = Some(myself);
        Ok(args.table)
    }

    async fn handle(
        &self,
        _: ActorRef<RouterMsg>,
        msg: RouterMsg,
        table: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Subscribe {
                client,
                filter,
                entry,
                reply,
            } => {
                table.insert(client, &filter, entry);
                let _ = reply.send(());
            }
            RouterMsg::Unsubscribe {
                client,
                filter,
                reply,
            } => {
                let _ = reply.send(table.remove(&client, &filter));
            }
            RouterMsg::RemoveClient {
                client,
                filters,
                reply,
            } => {
                match filters {
                    Some(filters) => filters.iter().for_each(|f| {
                        table.remove(&client, f);
                    }),
                    None => table.remove_client(&client),
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }
}

/// The QoS a retained message is delivered with to a new subscription.
pub fn retained_opts(msg: &Message, sub: &Subscription) -> DeliveryOpts {
    DeliveryOpts {
        qos: msg.qos.min(sub.options.qos).min(QoS::ExactlyOnce),
        retain: true,
        subscription_ids: sub.identifier.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl ClientRedirect for Nowhere {
        fn offer_to(&self, _: &ClientId, _: &Arc<Message>, _: DeliveryOpts, _: bool) {}

        fn target(&self) -> &str {
            "nowhere"
        }
    }

    fn redirect(created: std::time::Instant) -> Redirect {
        Redirect {
            subscription: Subscription {
                options: Default::default(),
                identifier: None,
            },
            sink: Arc::new(Nowhere),
            created,
            until_ms: AtomicU64::new(REDIRECT_TTL.as_millis() as u64),
        }
    }

    #[test]
    fn redirects_taken_out_are_put_back_as_they_were() {
        let routes = RouteTable::new();
        let client = ClientId::new("moved");
        let sub = Subscription {
            options: Default::default(),
            identifier: None,
        };
        routes.add_redirect(
            &client,
            vec![("a/#".into(), sub.clone()), ("b/+".into(), sub)],
            Arc::new(Nowhere),
            REDIRECT_TTL,
        );
        let count = |r: &RouteTable| r.redirects.read().len();
        assert_eq!(count(&routes), 2);
        let taken = routes.take_redirects(&client);
        assert!(!taken.is_empty());
        assert_eq!(count(&routes), 0);
        assert!(!routes.has_redirects.load(Ordering::Acquire));
        routes.restore_redirects(taken);
        assert_eq!(count(&routes), 2);
        assert!(routes.has_redirects.load(Ordering::Acquire));
        // Nobody else's are taken.
        assert!(routes.take_redirects(&ClientId::new("other")).is_empty());
        drop(routes.take_redirects(&client));
        assert_eq!(count(&routes), 0);
    }

    #[test]
    fn a_redirect_lives_its_ttl_then_ends() {
        let t0 = std::time::Instant::now();
        let r = redirect(t0);
        assert!(r.live(t0));
        assert!(r.live(t0 + REDIRECT_TTL));
        assert!(!r.live(t0 + REDIRECT_TTL + Duration::from_millis(1)));
    }

    #[test]
    fn messages_from_peers_keep_a_redirect_alive_up_to_its_max_life() {
        let t0 = std::time::Instant::now();
        let r = redirect(t0);
        // A late backlog: one message every 5 s keeps it going.
        let mut t = t0;
        while t < t0 + REDIRECT_MAX_LIFE {
            assert!(r.live(t), "at {:?}", t - t0);
            r.extend(t);
            t += Duration::from_secs(5);
        }
        assert!(r.live(t0 + REDIRECT_MAX_LIFE));
        assert!(!r.live(t0 + REDIRECT_MAX_LIFE + Duration::from_millis(1)));
        // An extension never shortens it.
        let r = redirect(t0);
        r.extend(t0 + Duration::from_secs(8));
        r.extend(t0 + Duration::from_secs(1));
        assert!(r.live(t0 + Duration::from_secs(18)));
    }
}
