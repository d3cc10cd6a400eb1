//! Semantic validation: ranges and cross-key consistency, one function per concern.

use std::time::Duration;

use super::{ConfigProblem, LogConfig, MgmtConfig, MqttConfig, NodeConfig};

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
}
