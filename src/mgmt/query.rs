//! Reads of the node's live state, shared by the API handlers and
//! `/metrics`. Every figure is computed from what is running *now*: live
//! connection actors (children of each listener), sessions as the registry
//! and each session actor report them, the route table, the retained store,
//! the supervision tree. Nothing is kept as a +/- counter that could drift.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use roost_actors::bridge::BridgeHandle;
use roost_actors::broker::BrokerCtx;
use roost_actors::listener::ListenerMsg;
use roost_actors::overflow::OverflowMode;
use roost_actors::registry::RegistryMsg;
use roost_actors::session::{SessionInfo, SessionMsg};
use roost_actors::storage_owner::{StorageOwnerMsg, StorageSlot};
use roost_actors::supervisor::TreeNode;
use roost_protocol::packet::ProtocolVersion;
use roost_protocol::{topic, ClientId, Message};
use roost_storage::StorageStats;

use super::error::ApiError;
use super::types::{
    self, ClientDetail, ClientSummary, Failure, ListenerStatus, RetainedMessage, RetainedSummary,
    RouteEntry, SubscriptionEntry, TreeEntry,
};

/// Timeout of one call to a broker actor (registry, listener).
const CALL_MS: u64 = 5_000;
/// Timeout of one session's `Info`; a session that does not answer in
/// time (stopping, or busy) is left out of that listing.
const SESSION_CALL_MS: u64 = 2_000;

/// Every running listener with its live connection count, by name.
pub async fn listeners(ctx: &BrokerCtx) -> Vec<ListenerStatus> {
    let refs: Vec<(String, ActorRef<ListenerMsg>)> = ctx
        .listeners
        .read()
        .iter()
        .map(|(name, l)| (name.clone(), l.clone()))
        .collect();
    let mut out = Vec::with_capacity(refs.len());
    for (name, l) in refs {
        let count = ractor::call_t!(l, ListenerMsg::ConnectionCount, CALL_MS);
        let addr = ractor::call_t!(l, ListenerMsg::LocalAddr, CALL_MS);
        // A listener that does not answer is stopped or restarting: it has
        // no connections (they stop with it).
        if let (Ok(count), Ok(addr)) = (count, addr) {
            out.push(ListenerStatus {
                name,
                addr: addr.to_string(),
                connections: count as u64,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The store's counters, as the `storage` actor reports them; `None` when
/// it does not answer within `timeout_ms` (it is restarting, or gone).
pub async fn storage_stats(slot: &StorageSlot, timeout_ms: u64) -> Option<StorageStats> {
    let owner = slot.read().clone()?;
    ractor::call_t!(owner, StorageOwnerMsg::Stats, timeout_ms).ok()
}

fn registry(ctx: &BrokerCtx) -> Result<ActorRef<RegistryMsg>, ApiError> {
    ctx.registry()
        .ok_or_else(|| ApiError::unavailable("the session registry is not running"))
}

fn registry_down(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!(
        "the session registry did not answer (restarting?): {e}"
    ))
}

/// Restart one client's session actor (see `RegistryMsg::RestartSession`):
/// `None` when the client has no session, else whether it was restored.
pub async fn restart_session(ctx: &BrokerCtx, client: &str) -> Result<Option<bool>, ApiError> {
    let registry = registry(ctx)?;
    let id = ClientId::new(client.to_owned());
    ractor::call_t!(registry, RegistryMsg::RestartSession, 15_000, id).map_err(registry_down)
}

/// Every session that answered, sorted by client id.
pub async fn sessions(ctx: &BrokerCtx) -> Result<Vec<SessionInfo>, ApiError> {
    roost_actors::registry::session_infos(ctx)
        .await
        .map_err(ApiError::unavailable)
}

/// One client's session, if it has one.
pub async fn session(ctx: &BrokerCtx, client: &str) -> Result<Option<SessionInfo>, ApiError> {
    let registry = registry(ctx)?;
    let id = ClientId::new(client.to_owned());
    let actor =
        ractor::call_t!(registry, RegistryMsg::Lookup, CALL_MS, id).map_err(registry_down)?;
    let Some(actor) = actor else {
        return Ok(None);
    };
    // It may have ended since the lookup: then it is gone.
    Ok(ractor::call_t!(actor, SessionMsg::Info, SESSION_CALL_MS).ok())
}

/// Disconnects a client (MQTT 5: DISCONNECT 0x98, administrative action);
/// false if it has no session.
pub async fn kick(ctx: &BrokerCtx, client: &str) -> Result<bool, ApiError> {
    let registry = registry(ctx)?;
    let id = ClientId::new(client.to_owned());
    ractor::call_t!(registry, RegistryMsg::Kick, CALL_MS, id).map_err(registry_down)
}

/// (online, offline) among `sessions`.
pub fn online_offline(sessions: &[SessionInfo]) -> (u64, u64) {
    let online = sessions.iter().filter(|s| s.connected).count() as u64;
    (online, sessions.len() as u64 - online)
}

pub fn client_summary(node: &str, s: &SessionInfo) -> ClientSummary {
    ClientSummary {
        node: node.to_owned(),
        client_id: s.client_id.to_string(),
        connected: s.connected,
        subscriptions: s.subscriptions.len() as u64,
        inflight: s.inflight as u64,
        queued: s.queued as u64,
    }
}

pub fn client_detail(s: SessionInfo) -> ClientDetail {
    let mut subscriptions = s.subscriptions;
    subscriptions.sort();
    ClientDetail {
        client_id: s.client_id.to_string(),
        connected: s.connected,
        subscriptions,
        inflight: s.inflight as u64,
        queued: s.queued as u64,
        dropped_queue_full: s.dropped_queue_full,
        inbox_dropped: s.inbox_dropped,
    }
}

/// Subscriptions from the route table, optionally of one client, sorted by
/// client then filter.
pub fn subscriptions(ctx: &BrokerCtx, client: Option<&str>) -> Vec<SubscriptionEntry> {
    let mut out: Vec<SubscriptionEntry> = ctx
        .routes
        .list_with_qos()
        .into_iter()
        .filter(|(_, c, _)| client.is_none_or(|want| c.as_str() == want))
        .map(|(filter, c, qos)| SubscriptionEntry {
            client_id: c.to_string(),
            filter,
            qos: qos as u8,
        })
        .collect();
    out.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
    out
}

/// Routes: one per distinct filter with subscribers (shared members under
/// the filter without its `$share/<group>/`), as the route table counts them.
pub fn routes(ctx: &BrokerCtx, node: &str) -> Vec<RouteEntry> {
    let mut by_route: BTreeMap<(String, bool), u64> = BTreeMap::new();
    for (filter, _, _) in ctx.routes.list_with_qos() {
        let key = match topic::parse_shared(&filter) {
            Ok(Some((_, f))) => (f.to_owned(), true),
            _ => (filter, false),
        };
        *by_route.entry(key).or_default() += 1;
    }
    by_route
        .into_iter()
        .map(|((topic, shared), subscribers)| RouteEntry {
            topic,
            node: node.to_owned(),
            shared,
            subscribers,
        })
        .collect()
}

/// Retained messages, sorted by topic.
pub fn retained(ctx: &BrokerCtx) -> Vec<RetainedSummary> {
    let mut topics = ctx.retained.topics();
    topics.sort();
    topics
        .iter()
        .filter_map(|t| ctx.retained.get(t))
        .map(|m| RetainedSummary {
            topic: m.topic.to_string(),
            qos: m.qos as u8,
            payload_bytes: m.payload.len() as u64,
        })
        .collect()
}

pub fn retained_message(m: &Arc<Message>) -> RetainedMessage {
    let now = Instant::now();
    RetainedMessage {
        topic: m.topic.to_string(),
        qos: m.qos as u8,
        payload_bytes: m.payload.len() as u64,
        payload_utf8: std::str::from_utf8(&m.payload).ok().map(str::to_owned),
        payload_base64: types::base64(&m.payload),
        expires_in_secs: m
            .expires_at
            .map(|at| at.saturating_duration_since(now).as_secs()),
    }
}

/// The tree as the API shows it (the root is named `roost`).
pub fn tree_entry(node: TreeNode) -> TreeEntry {
    let name = if node.path.is_empty() {
        "roost".to_owned()
    } else {
        node.name
    };
    TreeEntry {
        path: node.path,
        name,
        kind: node.kind.to_owned(),
        status: node.status,
        restarts: node.restarts,
        child_restarts: node.child_restarts,
        last_failure: node.last_failure.map(|(reason, at)| Failure {
            reason,
            at: types::rfc3339(at),
            at_unix: at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
        children: node.children.into_iter().map(tree_entry).collect(),
    }
}

/// Every node below the root: (path, restarts).
pub fn restarts_by_path(tree: &TreeNode) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<&TreeNode> = tree.children.iter().collect();
    while let Some(n) = stack.pop() {
        out.push((n.path.clone(), n.restarts));
        stack.extend(n.children.iter());
    }
    out.sort();
    out
}

/// Whether `node` and everything below it is running.
pub fn all_running(node: &TreeNode) -> bool {
    node.status == "running" && node.children.iter().all(all_running)
}

/// One bridge's row of `GET /api/v1/bridges`, from its live handle.
pub fn bridge_summary(h: &BridgeHandle) -> types::BridgeSummary {
    let s = h.stats();
    let m = &s.mailbox;
    let link = s.state.as_str().to_owned();
    types::BridgeSummary {
        name: s.name.clone(),
        kind: h.config.kind.as_str().to_owned(),
        remote: h.config.remote.clone(),
        state: if s.paused {
            "paused".to_owned()
        } else {
            link.clone()
        },
        link,
        paused: s.paused,
        queued: types::BridgeQueued {
            memory_messages: m.memory_messages,
            memory_bytes: m.memory_bytes,
            disk_messages: m.disk_messages,
            disk_bytes: m.disk_bytes,
        },
        inflight: s.inflight,
        sent: s.sent,
        retried: s.retried,
        dropped: s
            .dropped
            .iter()
            .map(|(reason, n)| ((*reason).to_owned(), *n))
            .collect(),
    }
}

/// `GET /api/v1/bridges/{name}`: the summary and the config, no password.
pub fn bridge_detail(h: &BridgeHandle) -> types::BridgeDetail {
    let c = &h.config;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    types::BridgeDetail {
        summary: bridge_summary(h),
        config: types::BridgeConfigView {
            remote: c.remote.clone(),
            client_id: c.client_id.clone(),
            protocol: match c.protocol {
                ProtocolVersion::V311 => "3.1.1",
                ProtocolVersion::V5 => "5",
            }
            .to_owned(),
            clean_start: c.clean_start,
            session_expiry_secs: c.session_expiry,
            username: c.username.clone(),
            password_set: c.password.is_some(),
            keep_alive_secs: c.keep_alive.as_secs(),
            local_topics: c.local_topics.clone(),
            remote_prefix: c.remote_prefix.clone(),
            qos: c.qos as u8,
            max_inflight: c.max_inflight,
            connect_timeout_ms: ms(c.connect_timeout),
            reconnect_min_ms: ms(c.reconnect_min),
            reconnect_max_ms: ms(c.reconnect_max),
            buffer_mode: match c.buffer.mode {
                OverflowMode::Memory => "memory",
                OverflowMode::VolatileOffload => "volatile_offload",
                OverflowMode::Durable => "durable",
            }
            .to_owned(),
            buffer_memory_bytes: c.buffer.memory_bytes,
            buffer_max_bytes: c.buffer.max_bytes,
            buffer_request_ttl_secs: c.buffer.request_ttl.map(|d| d.as_secs()),
        },
    }
}
