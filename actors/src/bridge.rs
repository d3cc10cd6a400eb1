//! Bridges (issue #6): node-local actors that move messages between this
//! node and another system. Kinds ([`BridgeKind`]):
//! - MQTT egress ([`Bridge`]): local topic filters -> a remote MQTT 3.1.1 or
//!   5.0 broker, with a topic prefix, at QoS 0 or 1;
//! - HTTP sink ([`HttpBridge`], `http.rs`): local topic filters -> a POST of
//!   each message (or a batch) as JSON to a URL;
//! - MQTT ingress ([`IngressBridge`], `ingress.rs`): remote topic filters ->
//!   local publishes, with a topic prefix.
//!
//! ```text
//! bridges (one_for_one)
//! └── <name>     one actor per configured bridge (its kind's actor)
//! ```
//!
//! # How a bridge gets messages
//! At node start every configured bridge gets a [`BridgeHandle`] in
//! `BrokerCtx::bridges`: it outlives the bridge actor's restarts and owns
//! the bridge's [`OverflowMailbox`], opened by the first `pre_start`. The
//! actor attaches a [`BridgeSink`] for its `local_topics` to the route table
//! (`RouteTable::attach_sink`): a publisher routing a matching message
//! encodes it into one record and pushes it into the mailbox, inline, and
//! goes on (a push never waits for the bridge or the remote; past
//! `max_bytes` the oldest queued records are dropped and counted). The
//! sink stays attached while the actor restarts, so nothing is refused
//! meanwhile.
//!
//! # Ack semantics
//! The actor takes records from the mailbox into a bounded inflight window
//! (`max_inflight`), publishes them to the remote and acknowledges them to
//! the mailbox only when the remote's PUBACK arrived (QoS 1; at QoS 0 when
//! written), in order: in `durable` mode a record leaves the store only
//! then. After a lost connection the window is resent first, in order, with
//! DUP (at least once). After an actor restart the mailbox is rewound
//! and the unacknowledged window is delivered again, first, in order (at
//! least once; `durable` reads it back from the store, the other modes
//! from memory; only `durable` survives the node).
//!
//! # Record format
//! `[1u8 version][flags: bit0 retain][topic len u16 BE][topic][payload]`:
//! what the mailbox stores (its byte bounds count the whole record).

mod actor;
mod actor_queue;
mod conn;
mod http;
mod http_client;
mod ingress;
mod latency;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use roost_protocol::packet::{ProtocolVersion, QoS};
use roost_protocol::Message;

use crate::broker::BrokerCtx;
use crate::overflow::{OverflowConfig, OverflowMailbox, OverflowStats};
use crate::router::RouteSink;
use crate::supervisor::ChildSpec;

pub use actor::{Bridge, BridgeArgs, BridgeMsg};
pub use actor_queue::{ActorQueue, Queued, READ_AHEAD};
pub use http::{HttpBridge, HttpBridgeMsg};
pub use ingress::{IngressBridge, IngressMsg};
pub use latency::{Latency, LatencySnapshot};

/// What a bridge does, and what only that kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeKind {
    /// `local_topics` -> the remote MQTT broker at `remote`.
    MqttEgress,
    /// Remote filters -> local publishes.
    MqttIngress(IngressConfig),
    /// `local_topics` -> HTTP POSTs to `remote` (a URL).
    Http(HttpSinkConfig),
}

impl BridgeKind {
    /// The config's name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            BridgeKind::MqttEgress => "mqtt",
            BridgeKind::MqttIngress(_) => "mqtt_ingress",
            BridgeKind::Http(_) => "http",
        }
    }
}

/// An MQTT ingress bridge's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// Filters subscribed on the remote (at the bridge's `qos`).
    pub remote_topics: Vec<String>,
    /// The local topic is `local_prefix` + the remote topic without the
    /// bridge's `remote_prefix` (when it starts with it).
    pub local_prefix: String,
}

/// An HTTP sink bridge's own settings (the URL is `BridgeConfig::remote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// Sent with every request, after `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    /// Bounds one request: connect, send, the answer's status and body.
    pub request_timeout: Duration,
    /// Messages per POST at most: 1 posts one JSON object, more a JSON
    /// array of up to that many (whatever is queued, in order).
    pub batch_size: usize,
}

/// One bridge, by value (from the node config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Unique per node: the actor's path segment and the mailbox's name.
    pub name: String,
    pub kind: BridgeKind,
    /// MQTT kinds: `host:port`, resolved again on every connect attempt.
    /// HTTP: the URL (`http://host:port/path`).
    pub remote: String,
    pub client_id: String,
    pub clean_start: bool,
    /// MQTT 5 Session Expiry Interval of the remote session (seconds).
    pub session_expiry: u32,
    pub protocol: ProtocolVersion,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub local_topics: Vec<String>,
    /// Prepended to the local topic.
    pub remote_prefix: String,
    /// QoS of the remote PUBLISH (0 or 1).
    pub qos: QoS,
    /// Publishes awaiting the remote's PUBACK at most.
    pub max_inflight: u16,
    pub connect_timeout: Duration,
    /// Reconnect backoff: doubles from `reconnect_min` up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// A downstream that holds sent messages unacknowledged this long
    /// (window full, or a request unanswered) is `blocked`.
    pub ack_timeout: Duration,
    pub buffer: OverflowConfig,
}

/// The downstream's state, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    Connecting = 0,
    Connected = 1,
    Disconnected = 2,
    /// Alive but not taking: sent messages unacknowledged past
    /// `ack_timeout` (window full, request unanswered, HTTP 5xx), or the
    /// bridge is paused while connected.
    Blocked = 3,
}

impl LinkState {
    pub const ALL: [LinkState; 4] = [
        LinkState::Connected,
        LinkState::Connecting,
        LinkState::Disconnected,
        LinkState::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
            LinkState::Blocked => "blocked",
        }
    }

    /// Connected or blocked: the link is up.
    pub fn is_up(self) -> bool {
        matches!(self, LinkState::Connected | LinkState::Blocked)
    }
}

/// Per-bridge counters, beyond the mailbox's own.
#[derive(Debug, Default)]
pub struct BridgeCounters {
    /// Acknowledged by the remote (QoS 1) or written (QoS 0).
    pub sent: AtomicU64,
    /// Resent after a reconnect (DUP).
    pub retried: AtomicU64,
    /// Refused by the remote (PUBACK reason >= 0x80).
    pub dropped_rejected: AtomicU64,
    /// Larger than the remote's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Records that could not be decoded.
    pub dropped_corrupt: AtomicU64,
    /// HTTP: answered with a status that is not retried (3xx, 4xx but 408
    /// and 429).
    pub dropped_http_rejected: AtomicU64,
    /// Ingress: messages received from the remote (and published locally).
    pub received: AtomicU64,
    /// When this bridge last logged a drop (rate limit), ms since the epoch.
    last_drop_log_ms: AtomicU64,
}

impl BridgeCounters {
    /// At most one drop warning per bridge every 10 s.
    pub(crate) fn may_log_drop(&self) -> bool {
        let now = crate::broker::unix_ms();
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 10_000
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

type ControlHook = Box<dyn Fn() + Send + Sync>;

/// A bridge's shared state: outlives its actor's restarts.
pub struct BridgeHandle {
    pub config: BridgeConfig,
    mailbox: Mutex<Option<Arc<OverflowMailbox>>>,
    state: AtomicU8,
    /// Paused by an operator: the actor takes nothing new from the mailbox
    /// (it keeps queueing; the inflight window may still complete).
    /// Survives actor restarts, not node restarts.
    paused: AtomicBool,
    /// Told when an operator pauses or resumes (bridges without a mailbox).
    control: RwLock<Option<ControlHook>>,
    inflight: AtomicU64,
    pub counters: BridgeCounters,
    /// The actor's own mailbox: what came with traffic and is not handled.
    pub actor_queue: Arc<ActorQueue>,
    /// Time from a message's push to the downstream's acknowledgement.
    pub latency: Latency,
}

/// What `/metrics` shows of one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStats {
    pub name: String,
    pub state: LinkState,
    /// Paused by an operator (a connected link then shows `blocked`).
    pub paused: bool,
    pub inflight: u64,
    pub mailbox: OverflowStats,
    /// Messages waiting in the bridge actor's own mailbox, and the most
    /// there were since start ([`ActorQueue`]).
    pub actor_queued: u64,
    pub actor_queued_peak: u64,
    pub sent: u64,
    pub retried: u64,
    /// Ingress: messages received from the remote.
    pub received: u64,
    /// (reason, count): queue_full, expired, store_error, rejected,
    /// too_large, corrupt, http_rejected.
    pub dropped: Vec<(&'static str, u64)>,
    pub latency: LatencySnapshot,
}

impl BridgeHandle {
    pub fn new(config: BridgeConfig) -> Arc<BridgeHandle> {
        Arc::new(BridgeHandle {
            config,
            mailbox: Mutex::new(None),
            state: AtomicU8::new(LinkState::Disconnected as u8),
            paused: AtomicBool::new(false),
            control: RwLock::new(None),
            inflight: AtomicU64::new(0),
            counters: BridgeCounters::default(),
            actor_queue: Arc::default(),
            latency: Latency::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn mailbox(&self) -> Option<Arc<OverflowMailbox>> {
        self.mailbox.lock().clone()
    }

    /// The downstream's state; a paused bridge whose link is up is
    /// `blocked` (it takes nothing).
    pub fn state(&self) -> LinkState {
        let s = match self.state.load(Ordering::Relaxed) {
            0 => LinkState::Connecting,
            1 => LinkState::Connected,
            3 => LinkState::Blocked,
            _ => LinkState::Disconnected,
        };
        if s == LinkState::Connected && self.is_paused() {
            LinkState::Blocked
        } else {
            s
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Stop sending new messages (they keep queueing). Whether it was
    /// running.
    pub fn pause(&self) -> bool {
        let was_running = !self.paused.swap(true, Ordering::AcqRel);
        self.notify_control();
        was_running
    }

    fn notify_control(&self) {
        if let Some(f) = self.control.read().as_ref() {
            f();
        }
    }

    /// The running actor's pause/resume hook (`None` when it stops).
    fn set_control(&self, hook: Option<ControlHook>) {
        *self.control.write() = hook;
    }

    /// Send again, in order, from where the pause left off: wakes the
    /// actor. Whether it was paused.
    pub fn resume(&self) -> bool {
        let was = self.paused.swap(false, Ordering::AcqRel);
        if let Some(m) = self.mailbox() {
            m.rewake();
        }
        self.notify_control();
        was
    }

    /// Set the state; logs `bridge_state` when it changed.
    fn set_state(&self, s: LinkState) {
        let old = self.state.swap(s as u8, Ordering::Relaxed);
        if old != s as u8 {
            tracing::info!(bridge = self.name(), state = s.as_str(), "bridge_state");
        }
    }

    pub fn stats(&self) -> BridgeStats {
        let mailbox = self.mailbox().map(|m| m.stats()).unwrap_or_default();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BridgeStats {
            name: self.config.name.clone(),
            state: self.state(),
            paused: self.is_paused(),
            inflight: get(&self.inflight),
            actor_queued: self.actor_queue.queued(),
            actor_queued_peak: self.actor_queue.peak(),
            sent: get(&c.sent),
            retried: get(&c.retried),
            received: get(&c.received),
            latency: self.latency.snapshot(),
            dropped: vec![
                ("queue_full", mailbox.dropped_queue_full),
                ("expired", mailbox.dropped_expired),
                ("store_error", mailbox.dropped_store_error),
                ("rejected", get(&c.dropped_rejected)),
                ("too_large", get(&c.dropped_too_large)),
                ("corrupt", get(&c.dropped_corrupt)),
                ("http_rejected", get(&c.dropped_http_rejected)),
            ],
            mailbox,
        }
    }
}

/// The supervisor's child spec of a bridge: its kind's actor at
/// `bridges/<name>`, with the handle that outlives its restarts.
pub fn child_spec(handle: Arc<BridgeHandle>, ctx: Arc<BrokerCtx>) -> ChildSpec {
    let name = handle.name().to_string();
    match handle.config.kind {
        BridgeKind::MqttEgress => ChildSpec::for_actor(name, move || {
            let (handle, ctx) = (handle.clone(), ctx.clone());
            (Bridge, BridgeArgs { handle, ctx })
        }),
        BridgeKind::Http(_) => ChildSpec::for_actor(name, move || {
            let (handle, ctx) = (handle.clone(), ctx.clone());
            (HttpBridge, BridgeArgs { handle, ctx })
        }),
        BridgeKind::MqttIngress(_) => ChildSpec::for_actor(name, move || {
            let (handle, ctx) = (handle.clone(), ctx.clone());
            (IngressBridge, BridgeArgs { handle, ctx })
        }),
    }
}

/// Every configured bridge by name (`BrokerCtx::bridges`).
#[derive(Default)]
pub struct Bridges(RwLock<BTreeMap<String, Arc<BridgeHandle>>>);

impl Bridges {
    pub fn insert(&self, handle: Arc<BridgeHandle>) {
        self.0.write().insert(handle.name().to_string(), handle);
    }

    pub fn get(&self, name: &str) -> Option<Arc<BridgeHandle>> {
        self.0.read().get(name).cloned()
    }

    /// Every bridge, in name order.
    pub fn list(&self) -> Vec<Arc<BridgeHandle>> {
        self.0.read().values().cloned().collect()
    }
}

/// The route sink of a bridge: encodes and pushes into its mailbox.
pub struct BridgeSink {
    mailbox: Arc<OverflowMailbox>,
}

impl RouteSink for BridgeSink {
    fn offer(&self, msg: &Arc<Message>) {
        // Drops are counted by the mailbox.
        let _ = self
            .mailbox
            .push(encode_record(&msg.topic, msg.retain, &msg.payload));
    }
}

const RECORD_V1: u8 = 1;

/// A queued message: topic, retain flag, payload (see the module doc).
pub fn encode_record(topic: &str, retain: bool, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(record_len(topic, payload));
    b.put_u8(RECORD_V1);
    b.put_u8(u8::from(retain));
    b.put_u16(topic.len() as u16);
    b.put_slice(topic.as_bytes());
    b.put_slice(payload);
    b.freeze()
}

/// The size a message takes in a bridge's mailbox (what `memory_bytes` and
/// `max_bytes` count).
pub fn record_len(topic: &str, payload: &[u8]) -> usize {
    4 + topic.len() + payload.len()
}

/// A decoded record: (topic, retain, payload), zero-copy.
pub fn decode_record(rec: &Bytes) -> Option<(ByteString, bool, Bytes)> {
    if rec.len() < 4 || rec[0] != RECORD_V1 {
        return None;
    }
    let retain = rec[1] & 1 != 0;
    let len = usize::from(u16::from_be_bytes([rec[2], rec[3]]));
    let topic = rec.get(4..4 + len)?;
    std::str::from_utf8(topic).ok()?;
    let topic = ByteString::try_from(rec.slice(4..4 + len)).ok()?;
    Some((topic, retain, rec.slice(4 + len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let r = encode_record("a/b", true, b"xyz");
        assert_eq!(r.len(), record_len("a/b", b"xyz"));
        let (t, retain, p) = decode_record(&r).unwrap();
        assert_eq!((&*t, retain, &p[..]), ("a/b", true, &b"xyz"[..]));
        assert!(decode_record(&Bytes::from_static(b"\x02\x00\x00\x00")).is_none());
        assert!(decode_record(&Bytes::from_static(b"\x01\x00\x00\x09ab")).is_none());
        assert!(decode_record(&Bytes::from_static(b"\x01\x00\x00\x01\xff")).is_none());
    }
}
