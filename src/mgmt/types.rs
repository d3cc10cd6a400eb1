//! The JSON bodies of the management API (`/api/v1`), shared by the server
//! ([`crate::mgmt`]) and `roost ctl` ([`crate::ctl`]) so the two cannot
//! drift apart. Field names are the wire format: add fields, never rename
//! (a `/api/v2` would be the place for that).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Every error: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A list: `{"data": [...]}` (room for paging metadata later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub version: String,
    pub uptime_secs: u64,
    /// Live connection actors, all listeners.
    pub connections: u64,
    pub listeners: Vec<ListenerStatus>,
    /// Sessions with a connection attached.
    pub sessions_online: u64,
    /// Sessions kept for a disconnected client (session expiry > 0).
    pub sessions_offline: u64,
    pub subscriptions: u64,
    pub routes: u64,
    pub retained: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// e.g. `tcp:default`.
    pub name: String,
    pub addr: String,
    pub connections: u64,
}

/// One row of `GET /api/v1/clients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSummary {
    /// The node holding the session.
    #[serde(default)]
    pub node: String,
    pub client_id: String,
    pub connected: bool,
    pub subscriptions: u64,
    pub inflight: u64,
    pub queued: u64,
}

/// `GET /api/v1/clients/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientDetail {
    pub client_id: String,
    pub connected: bool,
    pub subscriptions: Vec<String>,
    pub inflight: u64,
    pub queued: u64,
    /// Messages dropped because the session queue was full (oldest first).
    pub dropped_queue_full: u64,
    /// Deliveries refused because the session's inbox was full.
    pub inbox_dropped: u64,
}

/// `DELETE /api/v1/clients/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    pub client_id: String,
}

/// One row of `GET /api/v1/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEntry {
    pub client_id: String,
    /// As subscribed, `$share/<group>/` prefix included.
    pub filter: String,
    pub qos: u8,
}

/// One row of `GET /api/v1/routes`: a filter with subscribers on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The topic filter (for shared subscriptions, without `$share/<group>/`).
    pub topic: String,
    pub node: String,
    /// Whether this is the route of shared-subscription members.
    pub shared: bool,
    pub subscribers: u64,
}

/// One row of `GET /api/v1/retained`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedSummary {
    pub topic: String,
    pub qos: u8,
    pub payload_bytes: u64,
}

/// `GET /api/v1/retained/{topic}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedMessage {
    pub topic: String,
    pub qos: u8,
    pub payload_bytes: u64,
    /// The payload, when it is valid UTF-8.
    pub payload_utf8: Option<String>,
    /// The payload, always (standard base64 with padding).
    pub payload_base64: String,
    /// Seconds left of its Message Expiry Interval, if it has one.
    pub expires_in_secs: Option<u64>,
}

/// `DELETE /api/v1/retained/{topic}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub topic: String,
}

/// A node of `GET /api/v1/tree`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Full path (`""` for the root).
    pub path: String,
    /// Last path segment (`roost` for the root).
    pub name: String,
    /// `supervisor` or `worker`.
    pub kind: String,
    /// `running`, `restarting`, `starting` or `stopped`.
    pub status: String,
    /// Times its supervisor restarted it.
    pub restarts: u64,
    /// For a supervisor: restarts it performed on its children, in total.
    pub child_restarts: u64,
    pub last_failure: Option<Failure>,
    pub children: Vec<TreeEntry>,
}

/// The last abnormal exit of a child, as its supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub at_unix: u64,
}

/// `POST /api/v1/restart` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequest {
    pub path: String,
}

/// `POST /api/v1/restart` answer: the restart is scheduled (it completes
/// in the background; `GET tree` shows when it runs again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarted {
    pub path: String,
    /// For `sessions/<client id>`: whether the session came back from the
    /// store (persistent) or ended (clean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<bool>,
}

/// One row of `GET /api/v1/bridges`, and the answer of
/// `POST /api/v1/bridges/{name}/pause|resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSummary {
    pub name: String,
    /// `mqtt` (egress to a remote MQTT broker).
    pub kind: String,
    /// `host:port`.
    pub remote: String,
    /// `connected`, `connecting`, `disconnected`, or `paused` (paused by
    /// an operator, whatever the connection's state: see `link`).
    pub state: String,
    /// The connection: `connected`, `connecting` or `disconnected`.
    pub link: String,
    pub paused: bool,
    pub queued: BridgeQueued,
    /// Sent and not yet acknowledged by the remote (or not yet settled).
    pub inflight: u64,
    /// Acknowledged by the remote (QoS 1) or written (QoS 0).
    pub sent: u64,
    /// Sent again after a reconnect (DUP).
    pub retried: u64,
    /// By reason: queue_full, expired, store_error, rejected, too_large, corrupt.
    pub dropped: BTreeMap<String, u64>,
}

/// Messages waiting in a bridge's buffer (records: topic + payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeQueued {
    pub memory_messages: u64,
    pub memory_bytes: u64,
    /// Only on disk (not also in memory).
    pub disk_messages: u64,
    pub disk_bytes: u64,
}

/// `GET /api/v1/bridges/{name}`: the summary and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeDetail {
    #[serde(flatten)]
    pub summary: BridgeSummary,
    pub config: BridgeConfigView,
}

/// A bridge's configuration as the node runs it; the password is never
/// shown (`password_set` says whether there is one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConfigView {
    pub remote: String,
    pub client_id: String,
    /// `3.1.1` or `5`.
    pub protocol: String,
    pub clean_start: bool,
    pub session_expiry_secs: u32,
    pub username: Option<String>,
    pub password_set: bool,
    pub keep_alive_secs: u64,
    pub local_topics: Vec<String>,
    pub remote_prefix: String,
    pub qos: u8,
    pub max_inflight: u16,
    pub connect_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// `memory`, `volatile_offload` or `durable`.
    pub buffer_mode: String,
    pub buffer_memory_bytes: u64,
    pub buffer_max_bytes: u64,
    pub buffer_request_ttl_secs: Option<u64>,
}

/// `GET` / `PUT /api/v1/log/level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevel {
    /// A tracing `EnvFilter` directive: `debug`, `info,roost_actors=trace`.
    pub level: String,
}

/// `/health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    /// The default MQTT listener is running and answering.
    pub listener: bool,
    /// Every actor of the `broker` subtree is running.
    pub broker: bool,
    /// The store is open: the `storage` actor that holds it answers.
    pub storage: bool,
    /// The node is being evacuated (`roost ctl evacuation start`): not
    /// ready, so load balancers send new connections elsewhere.
    pub evacuating: bool,
}

/// `t` as RFC 3339 UTC (`2024-05-01T12:00:03Z`), without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Standard base64 with padding (RFC 4648), for binary payloads in JSON.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // leap year Feb 29
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }
}
