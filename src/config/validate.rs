//! Semantic validation: ranges and cross-key consistency, one function per concern.

use std::time::Duration;

use super::{
    BridgeConfig, ClusterConfig, ConfigProblem, LogConfig, MgmtConfig, MqttConfig, NodeConfig,
};

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

pub(super) fn cluster(c: &ClusterConfig, out: &mut Vec<ConfigProblem>) {
    use roost_cluster::discovery::{ConfigProblem as P, DiscoveryError};
    if c.name.is_empty() || !c.name.bytes().all(|b| b.is_ascii_graphic()) {
        out.push(ConfigProblem::invalid(
            "cluster.name",
            "must be non-empty visible ASCII (no spaces)",
        ));
    }
    if !c.cookie.is_empty()
        && (c.cookie.len() < 8 || !c.cookie.bytes().all(|b| b.is_ascii_graphic()))
    {
        out.push(ConfigProblem::invalid(
            "cluster.cookie",
            "must be at least 8 visible ASCII characters (or empty to generate one)",
        ));
    }
    if !c.advertise.is_empty() && roost_cluster::settings::parse_host_port(&c.advertise).is_none() {
        out.push(ConfigProblem::invalid(
            "cluster.advertise",
            format!(
                "expected host:port (IPv6 as [::1]:4370), got {:?}",
                c.advertise
            ),
        ));
    }
    if let Err(DiscoveryError::InvalidConfig { problems }) = discovery(c) {
        for p in problems {
            let path = match &p {
                P::UnknownStrategy(_) => "cluster.discovery",
                P::NoSeeds
                | P::SeedWithoutPort(_)
                | P::BadSeedPort { .. }
                | P::BadSeedHost(_)
                | P::Ipv6WithoutBrackets(_)
                | P::SeedsIgnored { .. } => "cluster.seeds",
                P::UnknownRecordType(_) => "cluster.dns_record",
                _ => "cluster.dns_name",
            };
            out.push(ConfigProblem::invalid(path, p.to_string()));
        }
    }
    let zero = |path: &str, d: &super::HumanDuration, out: &mut Vec<ConfigProblem>| {
        if d.is_zero() {
            out.push(ConfigProblem::invalid(path, "must be greater than 0s"));
        }
    };
    zero("cluster.heartbeat_interval", &c.heartbeat_interval, out);
    zero("cluster.connect_timeout", &c.connect_timeout, out);
    zero("cluster.reconnect_max", &c.reconnect_max, out);
    zero("cluster.dns_interval", &c.dns_interval, out);
    if c.heartbeat_timeout.as_duration() <= c.heartbeat_interval.as_duration() {
        out.push(ConfigProblem::invalid(
            "cluster.heartbeat_timeout",
            "must be longer than cluster.heartbeat_interval (a peer would be marked down between two heartbeats)",
        ));
    }
    if c.forward_buffer.as_u64() < 1 << 16 {
        out.push(ConfigProblem::invalid(
            "cluster.forward_buffer",
            "must be at least 64KiB",
        ));
    }
    if !matches!(c.forward_queue.as_str(), "durable" | "memory") {
        out.push(ConfigProblem::invalid(
            "cluster.forward_queue",
            "must be \"durable\" or \"memory\"",
        ));
    }
    for (name, address) in &c.peer_addresses {
        if !name.contains('@') {
            out.push(ConfigProblem::invalid(
                format!("cluster.peer_addresses.{name}"),
                "the key must be a member's node name, name@host",
            ));
        }
        if roost_cluster::settings::parse_host_port(address).is_none() {
            out.push(ConfigProblem::invalid(
                format!("cluster.peer_addresses.{name}"),
                format!("expected host:port (IPv6 as [::1]:4370), got {address:?}"),
            ));
        }
    }
}

/// The discovery settings of `c`, parsed.
pub fn discovery(
    c: &ClusterConfig,
) -> Result<roost_cluster::discovery::DiscoveryConfig, roost_cluster::discovery::DiscoveryError> {
    let dns = c.discovery.trim().eq_ignore_ascii_case("dns");
    roost_cluster::discovery::DiscoveryConfig::parse(
        &c.discovery,
        &c.seeds,
        (!c.dns_name.is_empty()).then_some(c.dns_name.as_str()),
        dns.then_some(c.dns_record.as_str()),
        c.listen.port(),
    )
}

/// Bridge kinds that exist (issue #6).
pub(crate) const BRIDGE_KINDS: &[&str] = &["mqtt", "mqtt_ingress", "http"];

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
        match b.kind.as_str() {
            "mqtt" => {
                bridge_mqtt(b, &mut bad);
                bridge_local_topics(b, &mut bad);
            }
            "mqtt_ingress" => {
                bridge_mqtt(b, &mut bad);
                bridge_ingress(b, &mut bad);
            }
            "http" => {
                bridge_http(b, &mut bad);
                bridge_local_topics(b, &mut bad);
            }
            other => {
                bad(
                    "kind",
                    format!(
                        "unknown kind {other:?} (supported: {})",
                        BRIDGE_KINDS.join(", ")
                    ),
                );
                // Checked as the default kind, so every other problem shows too.
                bridge_mqtt(b, &mut bad);
                bridge_local_topics(b, &mut bad);
            }
        }
        if b.kind != "mqtt_ingress" && !b.remote_topics.is_empty() {
            bad("remote_topics", "only for kind = \"mqtt_ingress\"".into());
        }
        bridge_timers(b, &mut bad);
        bridge_buffer(b, &mut bad);
    }
}

/// The keys of an MQTT bridge's remote end.
fn bridge_mqtt(b: &BridgeConfig, bad: &mut impl FnMut(&str, String)) {
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
    if !b.url.is_empty() {
        bad("url", "only for kind = \"http\" (use `remote`)".into());
    }
}

/// The keys of an HTTP sink: the URL, headers, request bounds.
fn bridge_http(b: &BridgeConfig, bad: &mut impl FnMut(&str, String)) {
    match b.url.parse::<axum::http::Uri>() {
        Err(e) => bad("url", format!("not a URL: {e} (got {:?})", b.url)),
        Ok(u) if u.scheme_str() != Some("http") => bad(
            "url",
            format!(
                "must start with http:// (https is not supported yet: put a TLS proxy in front), got {:?}",
                b.url
            ),
        ),
        Ok(u) if u.host().is_none_or(str::is_empty) => {
            bad("url", format!("has no host (got {:?})", b.url))
        }
        Ok(_) => {}
    }
    if !b.remote.is_empty() {
        bad("remote", "not used by kind = \"http\" (use `url`)".into());
    }
    for (k, v) in &b.headers {
        if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            bad("headers", format!("{k:?} is not a valid header name"));
        } else if axum::http::HeaderValue::from_str(v).is_err() {
            bad(
                "headers",
                format!("the value of {k:?} is not a valid header value"),
            );
        }
    }
    if b.request_timeout.is_zero() {
        bad("request_timeout", "must be greater than 0s".into());
    }
    if b.batch_size == 0 || b.batch_size > 10_000 {
        bad(
            "batch_size",
            format!("must be 1 to 10000, got {}", b.batch_size),
        );
    }
}

/// An ingress bridge's filters and local topic rewrite.
fn bridge_ingress(b: &BridgeConfig, bad: &mut impl FnMut(&str, String)) {
    if b.remote_topics.is_empty() {
        bad(
            "remote_topics",
            "must list at least one topic filter".into(),
        );
    }
    for f in &b.remote_topics {
        if let Err(e) = roost_protocol::topic::validate_topic_filter(f) {
            bad(
                "remote_topics",
                format!("{f:?} is not a valid topic filter: {e}"),
            );
        }
    }
    if !b.local_topics.is_empty() {
        bad(
            "local_topics",
            "not used by kind = \"mqtt_ingress\" (use `remote_topics`)".into(),
        );
    }
    if b.local_prefix.contains(['+', '#', '\0']) {
        bad(
            "local_prefix",
            format!(
                "must not contain `+`, `#` or NUL (got {:?})",
                b.local_prefix
            ),
        );
    }
}

fn bridge_local_topics(b: &BridgeConfig, bad: &mut impl FnMut(&str, String)) {
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
        ("ack_timeout", b.ack_timeout),
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
