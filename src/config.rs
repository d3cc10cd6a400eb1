//! Typed configuration of a Roost node.
//!
//! Sources, lowest precedence first: the embedded [`DEFAULT_CONFIG`] (or a file given with
//! `--config`), `ROOST_*` environment variables (`ROOST_MQTT__LISTEN=127.0.0.1:1884`), then
//! command-line flags ([`crate::cli::StartArgs::apply`]). [`load`] merges the first two and
//! reports *every* problem at once: unknown keys by their full dotted path, values of the
//! wrong type and semantic errors ([`Config::validate`]). It never panics on bad input.
//!
//! The structs are plain data with public fields, handed by value to the actors that need
//! them (no global config lookups). Durations are [`HumanDuration`] (`.as_duration()`),
//! sizes [`ByteSize`]. `Config::default()` equals the parsed embedded file (unit-tested).
//!
//! Must not depend on any runtime: this module is pure parsing and checking.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod load;
mod problem;
mod units;
mod validate;

pub use load::{load, parse, ENV_NOT_CONFIG, ENV_PREFIX};
pub use problem::{ConfigErrors, ConfigProblem, Origin, ProblemKind};
pub use units::{ByteSize, DurationError, HumanDuration, SizeError};
pub use validate::discovery as discovery_settings;

/// The commented default configuration, printed by `roost print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub mgmt: MgmtConfig,
    pub storage: StorageConfig,
    pub sys_topics: SysTopicsConfig,
    pub cluster: ClusterConfig,
    /// `[[bridges]]`: none by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<BridgeConfig>,
}

/// `[node]`: identity and local storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable node name, `name@host`. It identifies the node in a cluster, so it must not
    /// change across restarts; never derived from an IP address at runtime.
    pub name: String,
    /// Directory of the node's persistent state (RocksDB). One node per directory.
    pub data_dir: PathBuf,
    /// Process RSS above which the memory alarm is raised and new connections are refused;
    /// 0 = off. A size of this process, not a share of the machine: see default_config.toml.
    pub memory_high_watermark: ByteSize,
    /// Time between two reads of the process RSS for the watermark.
    pub memory_check_interval: HumanDuration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "roost@localhost".to_owned(),
            data_dir: PathBuf::from("./data"),
            memory_high_watermark: ByteSize::bytes(0),
            memory_check_interval: HumanDuration::from_secs(1),
        }
    }
}

/// `[log]`: logging. `RUST_LOG`, when set, takes precedence over `level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive: `info`, `roost=debug,ractor=warn`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

/// `[mgmt]`: the management HTTP API (`roost ctl`, `/metrics`, health checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MgmtConfig {
    /// Loopback by default: the API can kick clients and restart subtrees.
    pub listen: SocketAddr,
    /// Bearer token. Empty = generated on first start into
    /// `<data_dir>/mgmt.token` (mode 0600) and reused after.
    pub token: String,
}

impl Default for MgmtConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 18083)),
            token: String::new(),
        }
    }
}

/// `[storage]`: the node's durable store, `<data_dir>/store` (RocksDB).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// fsync the write-ahead log on every commit. Off: a committed write survives a
    /// `kill -9` of the process, not necessarily a power loss.
    pub sync: bool,
    /// Move a corrupt store aside (`<dir>.corrupt-<timestamp>`) and start empty, instead
    /// of refusing to start. Off: losing the state takes an operator's decision.
    pub quarantine_corrupt: bool,
}

/// `[sys_topics]`: the node's figures as `$SYS/brokers/<node>/...` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysTopicsConfig {
    /// Time between two rounds of `$SYS` messages; zero disables them.
    pub interval: HumanDuration,
}

impl Default for SysTopicsConfig {
    fn default() -> Self {
        Self {
            interval: HumanDuration::from_secs(10),
        }
    }
}

/// `[cluster]`: joining other nodes (issue #4). See default_config.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Nodes of another cluster name are refused.
    pub name: String,
    /// Where the cluster transport listens.
    pub listen: SocketAddr,
    /// `host:port` peers dial to reach this node; empty: the host part of
    /// `node.name` and the port of `listen`.
    pub advertise: String,
    /// Shared secret of the cluster. Empty: generated into
    /// `<data_dir>/cluster.cookie` (0600) on first start, so a node never
    /// accepts peers with a well-known default. Never logged.
    pub cookie: String,
    /// `manual`, `static` or `dns`.
    pub discovery: String,
    /// `static`: `host:port` of other nodes.
    pub seeds: Vec<String>,
    /// `dns`: the name to query, the record type (`a`, `aaaa`, `srv`) and
    /// how often to query it again.
    pub dns_name: String,
    pub dns_record: String,
    pub dns_interval: HumanDuration,
    pub heartbeat_interval: HumanDuration,
    pub heartbeat_timeout: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub reconnect_max: HumanDuration,
    /// Bytes queued per peer for forwarding; past it the oldest are
    /// dropped and counted.
    pub forward_buffer: ByteSize,
    /// `durable`: a peer's forward queue is in the store (written before the
    /// publisher's PUBACK, read back after a restart of this node);
    /// `memory`: lost with this node.
    pub forward_queue: String,
    /// After a partition heals, the minority side restarts its cluster
    /// subtree and resyncs from the majority (docs/OPERATIONS.md).
    pub autoheal: bool,
    /// A member down for longer than this is removed from the member list
    /// of every node, as if force-left. Zero: never.
    pub autoclean: HumanDuration,
    /// `member name -> host:port`: dial that member there instead of at the
    /// address it advertises (NAT, port forwarding, a fault proxy such as
    /// `roost-chaos`).
    pub peer_addresses: std::collections::BTreeMap<String, String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "roost".to_owned(),
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4370)),
            advertise: String::new(),
            cookie: String::new(),
            discovery: "manual".to_owned(),
            seeds: Vec::new(),
            dns_name: String::new(),
            dns_record: "a".to_owned(),
            dns_interval: HumanDuration::from_secs(10),
            heartbeat_interval: HumanDuration::from_secs(1),
            heartbeat_timeout: HumanDuration::from_secs(4),
            connect_timeout: HumanDuration::from_secs(3),
            reconnect_max: HumanDuration::from_secs(2),
            forward_buffer: ByteSize::bytes(64 << 20),
            forward_queue: "durable".to_owned(),
            autoheal: true,
            autoclean: HumanDuration::from_secs(24 * 3600),
            peer_addresses: std::collections::BTreeMap::new(),
        }
    }
}

/// `[mqtt]`: the MQTT listener and protocol limits. See `default_config.toml` for the
/// meaning of each key; the field docs say why the type is what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub listen: SocketAddr,
    pub max_connections: u32,
    /// Both directions; MQTT caps it at 268,435,455 bytes (the Remaining Length limit).
    pub max_packet_size: ByteSize,
    /// A u16: MQTT strings are length-prefixed with two bytes.
    pub max_client_id_len: u16,
    pub max_topic_levels: u16,
    /// Outbound inflight window per session, and the Receive Maximum we announce (a u16).
    pub max_inflight: u16,
    /// Queued messages per session; bounded, the oldest is dropped and counted.
    pub max_mqueue_len: usize,
    pub mqueue_store_qos0: bool,
    /// Per client; 0 = unlimited.
    pub max_subscriptions: u32,
    /// Topic Alias Maximum we announce; 0 disables inbound aliases.
    pub max_topic_alias: u16,
    /// 0, 1 or 2.
    pub max_qos: u8,
    pub retain_available: bool,
    pub wildcard_subscriptions: bool,
    pub shared_subscriptions: bool,
    pub subscription_identifiers: bool,
    /// Zero = use the client's keep alive; otherwise announced as Server Keep Alive.
    pub server_keep_alive: HumanDuration,
    /// The connection is closed after `keep_alive * multiplier` of silence [MQTT-3.1.2-24].
    pub keep_alive_multiplier: f64,
    pub max_session_expiry: HumanDuration,
    pub handshake_timeout: HumanDuration,
    pub retry_interval: HumanDuration,
    pub outbound_buffer: ByteSize,
    pub max_awaiting_rel: u32,
    pub shutdown_timeout: HumanDuration,
    /// Publisher flow control: the longest a publisher is paused, per read
    /// batch, while a subscriber it delivers to is congested. Zero disables.
    pub max_publish_delay: HumanDuration,
    /// Overload protection: connections accepted per second by a listener; 0 = unlimited.
    pub max_connection_rate: u32,
    /// PUBLISH packets per second per client; 0 = unlimited.
    pub max_publish_rate: u32,
    /// PUBLISH bytes per second per client (a size per second); 0 = unlimited.
    pub max_publish_bytes_rate: ByteSize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1883)),
            max_connections: 1_000_000,
            max_packet_size: ByteSize::bytes(1_000_000),
            max_client_id_len: 65_535,
            max_topic_levels: 128,
            max_inflight: 32,
            max_mqueue_len: 1_000,
            mqueue_store_qos0: true,
            max_subscriptions: 0,
            max_topic_alias: 65_535,
            max_qos: 2,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            server_keep_alive: HumanDuration::ZERO,
            keep_alive_multiplier: 1.5,
            max_session_expiry: HumanDuration::from_secs(2 * 3_600),
            handshake_timeout: HumanDuration::from_secs(10),
            retry_interval: HumanDuration::from_secs(30),
            outbound_buffer: ByteSize::bytes(8_000_000),
            max_awaiting_rel: 100,
            shutdown_timeout: HumanDuration::from_secs(5),
            max_publish_delay: HumanDuration::from_millis(500),
            max_connection_rate: 0,
            max_publish_rate: 0,
            max_publish_bytes_rate: ByteSize::bytes(0),
        }
    }
}

/// `[[bridges]]`: one bridge (issue #6): `kind = "mqtt"` (egress to a remote
/// MQTT broker), `"mqtt_ingress"` (remote topics -> local publishes) or
/// `"http"` (POST to a URL); see default_config.toml for every key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Unique; the actor's path is `bridges/<name>`.
    pub name: String,
    /// A string rather than an enum, so an unknown kind is a problem named by its path.
    pub kind: String,
    /// `host:port`, resolved again on every connect attempt.
    pub remote: String,
    /// Empty: `roost-bridge-<name>`.
    pub client_id: String,
    pub clean_start: bool,
    /// MQTT 5 Session Expiry Interval of the remote session (whole seconds).
    pub session_expiry: HumanDuration,
    /// "3.1.1" or "5".
    pub protocol: String,
    /// Empty: none.
    pub username: String,
    pub password: String,
    pub keep_alive: HumanDuration,
    pub local_topics: Vec<String>,
    pub remote_prefix: String,
    pub qos: u8,
    pub max_inflight: u16,
    pub connect_timeout: HumanDuration,
    pub reconnect_min: HumanDuration,
    pub reconnect_max: HumanDuration,
    /// Sent messages unacknowledged this long: the bridge shows `blocked`.
    pub ack_timeout: HumanDuration,
    /// `kind = "http"`: the URL messages are POSTed to (`http://host:port/path`).
    pub url: String,
    /// `kind = "http"`: extra request headers.
    pub headers: std::collections::BTreeMap<String, String>,
    /// `kind = "http"`: bounds one request (connect, send, answer).
    pub request_timeout: HumanDuration,
    /// `kind = "http"`: messages per POST at most (1: one JSON object; more: an array).
    pub batch_size: u32,
    /// `kind = "mqtt_ingress"`: filters subscribed on the remote.
    pub remote_topics: Vec<String>,
    /// `kind = "mqtt_ingress"`: the local topic is `local_prefix` + the remote
    /// topic without `remote_prefix`.
    pub local_prefix: String,
    pub buffer: BridgeBufferConfig,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: "mqtt".to_owned(),
            remote: String::new(),
            client_id: String::new(),
            clean_start: true,
            session_expiry: HumanDuration::ZERO,
            protocol: "5".to_owned(),
            username: String::new(),
            password: String::new(),
            keep_alive: HumanDuration::from_secs(60),
            local_topics: Vec::new(),
            remote_prefix: String::new(),
            qos: 1,
            max_inflight: 32,
            connect_timeout: HumanDuration::from_secs(10),
            reconnect_min: HumanDuration::from_secs(1),
            reconnect_max: HumanDuration::from_secs(30),
            ack_timeout: HumanDuration::from_secs(30),
            url: String::new(),
            headers: std::collections::BTreeMap::new(),
            request_timeout: HumanDuration::from_secs(10),
            batch_size: 1,
            remote_topics: Vec::new(),
            local_prefix: String::new(),
            buffer: BridgeBufferConfig::default(),
        }
    }
}

/// `[bridges.buffer]`: the bridge's overflow mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeBufferConfig {
    /// "durable", "volatile_offload" or "memory".
    pub mode: String,
    pub memory_bytes: ByteSize,
    pub max_bytes: ByteSize,
    /// Messages older than this when their turn comes are dropped; absent: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_ttl: Option<HumanDuration>,
}

impl Default for BridgeBufferConfig {
    fn default() -> Self {
        Self {
            mode: "durable".to_owned(),
            memory_bytes: ByteSize::bytes(16 << 20),
            max_bytes: ByteSize::bytes(1 << 30),
            request_ttl: None,
        }
    }
}

impl Config {
    /// Semantic checks the types cannot express (ranges, consistency between keys).
    /// Returns every problem found; empty means valid.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        validate::node(&self.node, &mut problems);
        validate::log(&self.log, &mut problems);
        validate::mqtt_limits(&self.mqtt, &mut problems);
        validate::mqtt_timers(&self.mqtt, &mut problems);
        validate::mgmt(&self.mgmt, &mut problems);
        validate::cluster(&self.cluster, &mut problems);
        validate::bridges(&self.bridges, &mut problems);
        problems
    }
}

#[cfg(test)]
pub(crate) mod tests;
