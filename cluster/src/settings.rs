//! The cluster's settings, by value (built from the node's `[cluster]`
//! config by the `roost` crate; no config parsing here).

use std::net::SocketAddr;
use std::time::Duration;

use crate::discovery::DiscoveryConfig;

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This node's stable name, `name@host`.
    pub node_name: String,
    /// Nodes with another cluster name are refused (both sides log it).
    pub cluster_name: String,
    /// Where ractor_cluster's NodeServer listens.
    pub listen: SocketAddr,
    /// `host:port` that peers dial to reach this node (a name, not an IP,
    /// unless the operator wrote one).
    pub advertise: String,
    /// ractor_cluster's shared secret. Never logged.
    pub cookie: String,
    pub discovery: DiscoveryConfig,
    /// How often DNS discovery is queried again.
    pub discovery_interval: Duration,
    /// A heartbeat to every peer this often.
    pub heartbeat_interval: Duration,
    /// A peer not heard from for this long is down.
    pub heartbeat_timeout: Duration,
    /// A link that is not ready (TCP + authentication + hello) within this
    /// is dropped and retried.
    pub connect_timeout: Duration,
    /// Reconnect backoff: first retry after about `reconnect_base`, growing
    /// to `reconnect_max`, with jitter.
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
    /// Bytes queued per peer for forwarding (memory); past it the oldest
    /// are dropped and counted.
    pub forward_buffer: u64,
    /// Messages taken from a peer's queue at once. With `forward_window`,
    /// how many messages are in flight to a peer: 256 x 8. Four times as
    /// many in flight (1024 x 8 or 256 x 32) was within the noise on
    /// loopback, and its larger bursts overflowed subscriber inboxes on the
    /// receiving node (QoS 0 drops) in 3 rounds of 6 (docs/BENCHMARKS.md,
    /// "Cross-node throughput").
    pub forward_batch: usize,
    /// Bytes (encoded messages) per forward frame at most: a batch larger
    /// than this goes as several frames, each acknowledged. One message
    /// larger than this goes alone. Far under ractor_cluster's 16 MiB frame
    /// limit, which a peer enforces by closing the link.
    pub forward_batch_bytes: usize,
    /// Frames sent and not yet acknowledged, per peer.
    pub forward_window: usize,
    /// Peers' forward queues in the store (`cluster.forward_queue =
    /// "durable"`) rather than in memory only.
    pub forward_durable: bool,
    /// Heal partitions: the minority restarts its cluster subtree.
    pub autoheal: bool,
    /// Members down this long are removed everywhere; `None`: never.
    pub autoclean: Option<Duration>,
    /// Dial these members at these addresses instead of the advertised one.
    pub peer_addresses: std::collections::BTreeMap<String, String>,
}

impl ClusterSettings {
    /// Defaults for `node_name` listening on `listen` (tests and embedding).
    pub fn new(node_name: &str, listen: SocketAddr, cookie: &str) -> ClusterSettings {
        ClusterSettings {
            node_name: node_name.to_owned(),
            cluster_name: "roost".to_owned(),
            listen,
            advertise: default_advertise(node_name, listen),
            cookie: cookie.to_owned(),
            discovery: DiscoveryConfig::Manual,
            discovery_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(3),
            reconnect_base: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(2),
            forward_buffer: 64 << 20,
            forward_batch: 256,
            forward_batch_bytes: 256 << 10,
            forward_window: 8,
            forward_durable: true,
            autoheal: true,
            autoclean: Some(Duration::from_secs(24 * 3600)),
            peer_addresses: std::collections::BTreeMap::new(),
        }
    }
}

/// `<host of the node name>:<listen port>`: what peers dial by default.
pub fn default_advertise(node_name: &str, listen: SocketAddr) -> String {
    let host = node_name.split_once('@').map_or(node_name, |(_, h)| h);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", listen.port())
    } else {
        format!("{host}:{}", listen.port())
    }
}

/// `host:port` (IPv6 as `[::1]:4370`) split, or `None` if it is not one.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// ractor_cluster names a node `name@hostname`: the two parts of ours.
pub fn split_name(node_name: &str) -> (String, String) {
    match node_name.split_once('@') {
        Some((n, h)) => (n.to_owned(), h.to_owned()),
        None => (node_name.to_owned(), "localhost".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_is_the_name_host_and_the_listen_port() {
        let l: SocketAddr = "0.0.0.0:4370".parse().unwrap();
        assert_eq!(default_advertise("roost@node-1.svc", l), "node-1.svc:4370");
        assert_eq!(default_advertise("roost@::1", l), "[::1]:4370");
        assert_eq!(split_name("a@b.c"), ("a".into(), "b.c".into()));
    }
}
