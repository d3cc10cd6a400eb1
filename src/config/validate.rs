//! Semantic validation: ranges and cross-key consistency, one function per concern.

use std::time::Duration;

use super::{BridgeConfig, ConfigProblem, LogConfig, MgmtConfig, MqttConfig, NodeConfig};

/// The largest Remaining Length MQTT can encode (four variable-byte digits).
const MQTT_MAX_PACKET_SIZE: u64 = 268_435_455;
/// [MQTT-3.1.3-5]: the server MUST allow client ids of 1 to 23 bytes.
const MQTT_MIN_CLIENT_ID_LEN: u16 = 23;
/// A configured management token shorter than this is too easy to guess.
pub(crate) const MGMT_MIN_TOKEN_LEN: usize = 16;

pub(super) fn node(node: &NodeConfig, out: &mut Vec<ConfigProblem>) {
    if let Err(why) = check_node_name(&node.name) {
        out.push(ConfigProblem::invalid(
            "node.name",
            format!(
                "{why} (got {:?}; expected `name@host`, e.g. \"roost@host.example\")",
                node.name
            ),
        ));
    }
    if node.data_dir.as_os_str().is_empty() {
        out.push(ConfigProblem::invalid("node.data_dir", "must not be empty"));
    }
    if node.memory_check_interval.is_zero() {
        out.push(ConfigProblem::invalid(
            "node.memory_check_interval",
            "must be greater than 0s (set node.memory_high_watermark = 0 to turn the check off)",
        ));
    }
}

fn check_node_name(name: &str) -> Result<(), &'static str> {
    let Some((local, host)) = name.split_once('@') else {
        return Err("must contain `@`");
    };
    if local.is_empty() || host.is_empty() {
        return Err("both the name and the host part must be non-empty");
    }
    if host.contains('@') {
        return Err("must contain a single `@`");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !local.chars().all(allowed) || !host.chars().all(allowed) {
        return Err("may only contain ASCII letters, digits, `-`, `_` and `.` around the `@`");
    }
    if name.len() > 255 {
        return Err("must be at most 255 bytes");
    }
    Ok(())
}

pub(super) fn log(log: &LogConfig, out: &mut Vec<ConfigProblem>) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
        out.push(ConfigProblem::invalid(
            "log.level",
            format!("not a valid tracing filter directive {:?}: {e}", log.level),
        ));
    }
}

pub(super) fn mqtt_limits(m: &MqttConfig, out: &mut Vec<ConfigProblem>) {
    let mut at_least_one = |path: &str, value: u64| {
        if value == 0 {
            out.push(ConfigProblem::invalid(path, "must be at least 1"));
        }
    };
    at_least_one("mqtt.max_connections", m.max_connections.into());
    at_least_one("mqtt.max_topic_levels", m.max_topic_levels.into());
    at_least_one("mqtt.max_inflight", m.max_inflight.into());
    at_least_one("mqtt.max_awaiting_rel", m.max_awaiting_rel.into());
    if m.max_mqueue_len == 0 {
        out.push(ConfigProblem::invalid(
            "mqtt.max_mqueue_len",
            "must be at least 1 (session queues are always bounded; there is no unlimited)",
        ));
    }
    let packet = m.max_packet_size.as_u64();
    if !(1..=MQTT_MAX_PACKET_SIZE).contains(&packet) {
        out.push(ConfigProblem::invalid(
            "mqtt.max_packet_size",
            format!("must be between 1 and {MQTT_MAX_PACKET_SIZE} bytes, got {packet}"),
        ));
    }
    if m.max_client_id_len < MQTT_MIN_CLIENT_ID_LEN {
        out.push(ConfigProblem::invalid(
            "mqtt.max_client_id_len",
            format!(
                "must be at least {MQTT_MIN_CLIENT_ID_LEN} [MQTT-3.1.3-5], got {}",
                m.max_client_id_len
            ),
        ));
    }
    if m.max_qos > 2 {
        out.push(ConfigProblem::invalid(
            "mqtt.max_qos",
            format!("must be 0, 1 or 2, got {}", m.max_qos),
        ));
    }
    if m.outbound_buffer < m.max_packet_size {
        out.push(ConfigProblem::invalid(
            "mqtt.outbound_buffer",
            format!(
                "must be at least mqtt.max_packet_size ({}), or one maximum-size packet would disconnect a client; got {}",
                m.max_packet_size, m.outbound_buffer
            ),
        ));
    }
}

pub(super) fn mqtt_timers(m: &MqttConfig, out: &mut Vec<ConfigProblem>) {
    let keep_alive = m.server_keep_alive.as_duration();
    if keep_alive > Duration::from_secs(u16::MAX.into()) || keep_alive.subsec_nanos() != 0 {
        out.push(ConfigProblem::invalid(
            "mqtt.server_keep_alive",
            format!(
                "must be whole seconds up to 65535s (a u16 in MQTT), got {}",
                m.server_keep_alive
            ),
        ));
    }
    if !m.keep_alive_multiplier.is_finite() || m.keep_alive_multiplier < 1.0 {
        out.push(ConfigProblem::invalid(
            "mqtt.keep_alive_multiplier",
            format!(
                "must be a finite number >= 1.0, got {}",
                m.keep_alive_multiplier
            ),
        ));
    }
    if m.max_session_expiry.as_duration() > Duration::from_secs(u32::MAX.into()) {
        out.push(ConfigProblem::invalid(
            "mqtt.max_session_expiry",
            format!(
                "must be at most 4294967295s (a u32 in MQTT), got {}",
                m.max_session_expiry
            ),
        ));
    }
    for (path, value) in [
        ("mqtt.handshake_timeout", m.handshake_timeout),
        ("mqtt.retry_interval", m.retry_interval),
    ] {
        if value.is_zero() {
            out.push(ConfigProblem::invalid(path, "must be greater than 0s"));
        }
    }
}

pub(super) fn mgmt(m: &MgmtConfig, out: &mut Vec<ConfigProblem>) {
    if m.token.is_empty() {
        return;
    }
    if m.token.len() < MGMT_MIN_TOKEN_LEN {
        out.push(ConfigProblem::invalid(
            "mgmt.token",
            format!(
                "must be at least {MGMT_MIN_TOKEN_LEN} characters (or empty to generate one), got {}",
                m.token.len()
            ),
        ));
    }
    // It travels in an HTTP header: visible ASCII only.
    if !m.token.bytes().all(|b| b.is_ascii_graphic()) {
        out.push(ConfigProblem::invalid(
            "mgmt.token",
            "may only contain visible ASCII characters (no spaces or control characters)",
        ));
    }
}

/// Bridge kinds that exist (issue #6: `http` and MQTT ingress are to come).
pub(crate) const BRIDGE_KINDS: &[&str] = &["mqtt"];

pub(super) fn bridges(bridges: &[BridgeConfig], out: &mut Vec<ConfigProblem>) {
    let mut names = std::collections::HashSet::new();
    for (i, b) in bridges.iter().enumerate() {
        let at = |key: &str| format!("bridges[{i}].{key}");
        let mut bad = |key: &str, why: String| out.push(ConfigProblem::invalid(at(key), why));
        if let Err(why) = check_bridge_name(&b.name) {
            bad("name", format!("{why} (got {:?})", b.name));
        } else if !names.insert(b.name.as_str()) {
            bad("name", format!("{:?} is used by two bridges", b.name));
        }
        if !BRIDGE_KINDS.contains(&b.kind.as_str()) {
            bad(
                "kind",
                format!(
                    "unknown kind {:?} (supported: {})",
                    b.kind,
                    BRIDGE_KINDS.join(", ")
                ),
            );
        }
        if let Err(why) = check_host_port(&b.remote) {
            bad(
                "remote",
                format!(
                    "{why} (got {:?}; expected `host:port`, e.g. \"broker.example:1883\")",
                    b.remote
                ),
            );
        }
        if !matches!(b.protocol.as_str(), "3.1.1" | "5" | "5.0") {
            bad(
                "protocol",
                format!("must be \"3.1.1\" or \"5\", got {:?}", b.protocol),
            );
        }
        if b.local_topics.is_empty() {
            bad("local_topics", "must list at least one topic filter".into());
        }
        for f in &b.local_topics {
            match roost_protocol::topic::validate_topic_filter(f) {
                Err(e) => bad(
                    "local_topics",
                    format!("{f:?} is not a valid topic filter: {e}"),
                ),
                Ok(()) if f.starts_with("$share/") => bad(
                    "local_topics",
                    format!("{f:?}: shared subscriptions cannot be bridged"),
                ),
                Ok(()) => {}
            }
        }
        if b.remote_prefix.contains(['+', '#', '\0']) {
            bad(
                "remote_prefix",
                format!(
                    "must not contain `+`, `#` or NUL (got {:?})",
                    b.remote_prefix
                ),
            );
        }
        if b.qos > 1 {
            bad("qos", format!("must be 0 or 1, got {}", b.qos));
        }
        if b.max_inflight == 0 {
            bad("max_inflight", "must be at least 1".into());
        }
        bridge_timers(b, &mut bad);
        bridge_buffer(b, &mut bad);
    }
}

fn bridge_timers(b: &BridgeConfig, bad: &mut impl FnMut(&str, String)) {
    if b.session_expiry.as_duration() > Duration::from_secs(u32::MAX.into()) {
        bad(
            "session_expiry",
            format!("must be at most 4294967295s, got {}", b.session_expiry),
        );
    }
    if b.keep_alive.as_duration() > Duration::from_secs(u16::MAX.into()) {
        bad(
            "keep_alive",
            format!("must be at most 65535s, got {}", b.keep_alive),
        );
    }
    for (key, v) in [
        ("connect_timeout", b.connect_timeout),
        ("reconnect_min", b.reconnect_min),
    ] {
        if v.is_zero() {
            bad(key, "must be greater than 0s".into());
        }
    }
    if b.reconnect_max < b.reconnect_min {
        bad(
            "reconnect_max",
            format!(
                "must be at least reconnect_min ({}), got {}",
                b.reconnect_min, b.reconnect_max
            ),
        );
    }
}

fn bridge_buffer(b: &BridgeConfig, bad: &mut impl FnMut(&str, String)) {
    let buf = &b.buffer;
    if !matches!(buf.mode.as_str(), "durable" | "volatile_offload" | "memory") {
        bad(
            "buffer.mode",
            format!(
                "must be \"durable\", \"volatile_offload\" or \"memory\", got {:?}",
                buf.mode
            ),
        );
    }
    if buf.max_bytes.as_u64() == 0 {
        bad(
            "buffer.max_bytes",
            "must be greater than 0 (the queue is always bounded)".into(),
        );
    }
    if buf.memory_bytes.as_u64() == 0 && buf.mode != "memory" {
        bad("buffer.memory_bytes", "must be greater than 0".into());
    }
    if buf.memory_bytes > buf.max_bytes {
        bad(
            "buffer.memory_bytes",
            format!(
                "must be at most buffer.max_bytes ({}), got {}",
                buf.max_bytes, buf.memory_bytes
            ),
        );
    }
    if buf.request_ttl.is_some_and(|t| t.is_zero()) {
        bad(
            "buffer.request_ttl",
            "must be greater than 0s (leave it out for no TTL)".into(),
        );
    }
}

fn check_bridge_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if !name.chars().all(allowed) {
        return Err("may only contain ASCII letters, digits, `-`, `_`, `.` and `:`");
    }
    Ok(())
}

/// `host:port`, or `[v6]:port`; the host is resolved at connect time.
fn check_host_port(s: &str) -> Result<(), &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("missing `:port`");
    };
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host = bracketed.unwrap_or(host);
    if host.is_empty() {
        return Err("missing host");
    }
    if host.contains(':') && (bracketed.is_none() || host.parse::<std::net::Ipv6Addr>().is_err()) {
        return Err("an IPv6 address must be in brackets, e.g. [::1]:1883");
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err("the host is not a valid DNS name or address");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_need_a_name_and_a_host() {
        assert!(check_node_name("roost@localhost").is_ok());
        assert!(check_node_name("roost-1@roost-1.roost.svc.cluster.local").is_ok());
        assert!(check_node_name("roost@10.0.0.1").is_ok());
        for bad in [
            "",
            "roost",
            "@host",
            "roost@",
            "a@b@c",
            "ro ost@host",
            "roost@hö.st",
        ] {
            assert!(check_node_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn bridge_remotes_need_a_host_and_a_port() {
        for good in [
            "broker:1883",
            "10.0.0.1:8883",
            "[::1]:1883",
            "a.b-c.example:1",
        ] {
            assert!(check_host_port(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "broker",
            ":1883",
            "broker:0",
            "broker:99999",
            "::1:1883",
            "bro ker:1883",
            "mqtt://b:1883",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
