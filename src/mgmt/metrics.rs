//! `/metrics`: Prometheus (OpenMetrics text) via prometheus-client, with a
//! fresh typed registry per scrape and no global one.
//!
//! Gauges are read from live state at scrape time ([`super::query`]): they
//! cannot go negative or drift, because nothing increments or decrements
//! them. Counters are the broker's monotonic [`Counters`] and the restart
//! counts of the supervision tree.

use std::fmt::Write as _;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use roost_actors::bridge::{BridgeStats, LatencySnapshot, LinkState};
use roost_actors::broker::Counters;
use roost_storage::StorageStats;

use super::query;
use super::AppState;

/// Content type of the OpenMetrics text format (Prometheus reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// How long a scrape waits for the `storage` actor's counters.
const STORAGE_CALL_MS: u64 = 2_000;

/// Everything one scrape reports, read from the running node.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub uptime_secs: u64,
    /// (listener, live connections).
    pub connections: Vec<(String, u64)>,
    pub sessions_online: u64,
    pub sessions_offline: u64,
    pub subscriptions: u64,
    pub routes: u64,
    pub retained: u64,
    pub counters: CounterValues,
    /// (path, restarts); empty if the tree did not answer.
    pub restarts: Vec<(String, u64)>,
    pub rss_bytes: Option<u64>,
    /// The store's counters; `None` if its actor did not answer (the
    /// counters are then left out of the scrape rather than shown as 0).
    pub storage: Option<StorageStats>,
    /// Retained-message commits that failed.
    pub retained_write_errors: u64,
    /// The memory alarm (`node.memory_high_watermark`), and the watermark
    /// in bytes (0 = off).
    pub memory_alarm: bool,
    pub memory_high_watermark: u64,
    /// Every configured bridge, in name order.
    pub bridges: Vec<BridgeStats>,
    /// The cluster layer, when it runs.
    pub cluster: Option<super::cluster_metrics::ClusterSnapshot>,
}

/// A copy of the broker's [`Counters`].
#[derive(Debug, Default, Clone)]
pub struct CounterValues {
    pub received: u64,
    pub delivered: u64,
    pub dropped_no_subscribers: u64,
    pub dropped_inbox_full: u64,
    pub dropped_slow_consumer: u64,
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub malformed_packets: u64,
    /// Session, queue and QoS 2 state writes that failed.
    pub session_write_errors: u64,
    pub connection_failures: u64,
    pub session_failures: u64,
    pub publisher_pauses: u64,
    pub publisher_paused_us: u64,
    pub connections_accepted: u64,
    /// Refused at `mqtt.max_connections`.
    pub connections_refused: u64,
    pub connections_refused_memory: u64,
    pub connections_refused_evacuation: u64,
    pub connections_rate_limited: u64,
    pub publish_rate_limited: u64,
    pub connections_force_closed: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// PUBLISH packets by QoS 0, 1, 2.
    pub publish_received: [u64; 3],
    pub publish_sent: [u64; 3],
}

impl CounterValues {
    pub fn read(c: &Counters) -> Self {
        let g = Counters::get;
        CounterValues {
            received: g(&c.messages_received),
            delivered: g(&c.messages_delivered),
            dropped_no_subscribers: g(&c.messages_dropped_no_subscribers),
            dropped_inbox_full: g(&c.messages_dropped_inbox_full),
            dropped_slow_consumer: g(&c.messages_dropped_slow_consumer),
            dropped_queue_full: g(&c.messages_dropped_queue_full),
            dropped_expired: g(&c.messages_dropped_expired),
            malformed_packets: g(&c.malformed_packets),
            session_write_errors: g(&c.storage_errors),
            connection_failures: g(&c.connection_actor_failures),
            session_failures: g(&c.session_actor_failures),
            publisher_pauses: g(&c.publisher_pauses),
            publisher_paused_us: g(&c.publisher_paused_us),
            connections_accepted: g(&c.connections_accepted),
            connections_refused: g(&c.connections_refused),
            connections_refused_memory: g(&c.connections_refused_memory),
            connections_refused_evacuation: g(&c.connections_refused_evacuation),
            connections_rate_limited: g(&c.connections_rate_limited),
            publish_rate_limited: g(&c.publish_rate_limited),
            connections_force_closed: g(&c.connections_force_closed),
            bytes_received: g(&c.bytes_received),
            bytes_sent: g(&c.bytes_sent),
            publish_received: c.publish_received.each_ref().map(g),
            publish_sent: c.publish_sent.each_ref().map(g),
        }
    }
}

/// Reads the live state. Sessions the registry lists but that do not
/// answer in time are left out (they are stopping).
pub async fn snapshot(app: &AppState) -> Snapshot {
    let ctx = &app.shared.ctx;
    let connections = query::listeners(ctx)
        .await
        .into_iter()
        .map(|l| (l.name, l.connections))
        .collect();
    let (sessions_online, sessions_offline) = match query::sessions(ctx).await {
        Ok(s) => query::online_offline(&s),
        Err(_) => (0, 0),
    };
    let restarts = match roost_actors::supervisor::tree(&app.root).await {
        Ok(tree) => query::restarts_by_path(&tree),
        Err(_) => Vec::new(),
    };
    Snapshot {
        uptime_secs: app.shared.started.elapsed().as_secs(),
        connections,
        sessions_online,
        sessions_offline,
        subscriptions: ctx.routes.subscription_count() as u64,
        routes: ctx.routes.route_count() as u64,
        retained: ctx.retained.len() as u64,
        counters: CounterValues::read(&ctx.counters),
        restarts,
        rss_bytes: process_rss_bytes(),
        storage: query::storage_stats(&app.shared.storage, STORAGE_CALL_MS).await,
        retained_write_errors: ctx.retained.write_errors(),
        memory_alarm: ctx.overload.memory_alarm(),
        memory_high_watermark: ctx.overload.memory_high_watermark(),
        bridges: ctx.bridges.list().iter().map(|b| b.stats()).collect(),
        cluster: match &app.shared.cluster {
            Some(c) => Some(super::cluster_metrics::snapshot(c).await),
            None => None,
        },
    }
}

fn gauge(v: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gauge_family(rows: &[(Labels, u64)]) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        family
            .get_or_create(l)
            .set(i64::try_from(*v).unwrap_or(i64::MAX));
    }
    family
}

fn counter_family(rows: &[(Labels, u64)]) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        family.get_or_create(l).inc_by(*v);
    }
    family
}

/// The OpenMetrics text of `s`, every name prefixed `roost_`.
pub fn encode_snapshot(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("roost");
    register_gauges(&mut r, s);
    register_counters(&mut r, &s.counters);
    register_storage(&mut r, s);
    register_bridges(&mut r, &s.bridges);
    if let Some(c) = &s.cluster {
        super::cluster_metrics::register(&mut r, c);
    }
    let restarts: Vec<(Labels, u64)> = s
        .restarts
        .iter()
        .map(|(path, n)| (labels(&[("path", path)]), *n))
        .collect();
    r.register(
        "supervisor_restarts",
        "Restarts of the actor at each supervision tree path",
        counter_family(&restarts),
    );
    let mut out = String::new();
    if encode(&mut out, &r).is_err() {
        // Writing to a String cannot fail; keep the scrape well-formed anyway.
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

fn register_gauges(r: &mut Registry, s: &Snapshot) {
    let conns: Vec<(Labels, u64)> = s
        .connections
        .iter()
        .map(|(name, n)| (labels(&[("listener", name)]), *n))
        .collect();
    r.register(
        "connections",
        "Live MQTT connections (connection actors), by listener",
        gauge_family(&conns),
    );
    let sessions = [
        (labels(&[("status", "online")]), s.sessions_online),
        (labels(&[("status", "offline")]), s.sessions_offline),
    ];
    r.register(
        "sessions",
        "Sessions by status: online (a connection is attached) or offline (kept for a disconnected client)",
        gauge_family(&sessions),
    );
    r.register(
        "subscriptions",
        "Subscriptions in the route table (shared-subscription members included)",
        gauge(s.subscriptions),
    );
    r.register(
        "routes",
        "Distinct topic filters with at least one subscriber",
        gauge(s.routes),
    );
    r.register(
        "retained_messages",
        "Retained messages stored",
        gauge(s.retained),
    );
    r.register_with_unit(
        "uptime",
        "Time since the node started",
        Unit::Seconds,
        gauge(s.uptime_secs),
    );
    if let Some(rss) = s.rss_bytes {
        r.register_with_unit(
            "process_resident_memory",
            "Resident set size of the broker process (VmRSS)",
            Unit::Bytes,
            gauge(rss),
        );
    }
    r.register(
        "memory_alarm",
        "1 while the process RSS is above node.memory_high_watermark (new connections are refused), else 0",
        gauge(u64::from(s.memory_alarm)),
    );
    r.register_with_unit(
        "memory_high_watermark",
        "node.memory_high_watermark in bytes (0 = off)",
        Unit::Bytes,
        gauge(s.memory_high_watermark),
    );
}

/// Unlabelled counters: (name, help, value).
fn simple_counters(c: &CounterValues) -> [(&'static str, &'static str, u64); 8] {
    [
        (
            "messages_received",
            "PUBLISH packets received from clients (wills included)",
            c.received,
        ),
        (
            "messages_delivered",
            "Messages written to subscribers' connections",
            c.delivered,
        ),
        (
            "malformed_packets",
            "Packets that could not be decoded (the connection was closed)",
            c.malformed_packets,
        ),
        (
            "publisher_pauses",
            "Times a publisher was paused for a congested subscriber",
            c.publisher_pauses,
        ),
        (
            "connections_accepted",
            "TCP connections accepted",
            c.connections_accepted,
        ),
        (
            "connections_rate_limited",
            "Accepted connections made to wait for mqtt.max_connection_rate",
            c.connections_rate_limited,
        ),
        (
            "publish_rate_limited",
            "Times a client's socket was left unread for its publish rate limit",
            c.publish_rate_limited,
        ),
        (
            "connections_force_closed",
            "Clients disconnected because their outbound buffer was full",
            c.connections_force_closed,
        ),
    ]
}

fn register_counters(r: &mut Registry, c: &CounterValues) {
    for (name, help, v) in simple_counters(c) {
        r.register(name, help, ConstCounter::new(v));
    }
    r.register(
        "bytes_received",
        "Bytes of MQTT packets read from clients",
        ConstCounter::new(c.bytes_received),
    );
    r.register(
        "bytes_sent",
        "Bytes written to client sockets",
        ConstCounter::new(c.bytes_sent),
    );
    let by_qos = |v: &[u64; 3]| -> Vec<(Labels, u64)> {
        ["0", "1", "2"]
            .iter()
            .zip(v)
            .map(|(q, n)| (labels(&[("qos", q)]), *n))
            .collect()
    };
    r.register(
        "publish_received",
        "PUBLISH packets received from clients, by QoS",
        counter_family(&by_qos(&c.publish_received)),
    );
    r.register(
        "publish_sent",
        "PUBLISH packets written to clients (resends included), by QoS",
        counter_family(&by_qos(&c.publish_sent)),
    );
    r.register_with_unit(
        "publisher_paused",
        "Total time publishers spent paused for congested subscribers",
        Unit::Seconds,
        ConstCounter::new(c.publisher_paused_us as f64 / 1e6),
    );
    let dropped = [
        (
            labels(&[("reason", "no_subscribers")]),
            c.dropped_no_subscribers,
        ),
        (labels(&[("reason", "inbox_full")]), c.dropped_inbox_full),
        (
            labels(&[("reason", "slow_consumer")]),
            c.dropped_slow_consumer,
        ),
        (labels(&[("reason", "queue_full")]), c.dropped_queue_full),
        (labels(&[("reason", "expired")]), c.dropped_expired),
    ];
    r.register(
        "messages_dropped",
        "Messages dropped, by reason",
        counter_family(&dropped),
    );
    let refused = [
        (
            labels(&[("reason", "max_connections")]),
            c.connections_refused,
        ),
        (
            labels(&[("reason", "memory")]),
            c.connections_refused_memory,
        ),
        (
            labels(&[("reason", "evacuation")]),
            c.connections_refused_evacuation,
        ),
    ];
    r.register(
        "connections_refused",
        "Connections refused with a CONNACK (or closed unanswered past 64 refusals at once), by reason",
        counter_family(&refused),
    );
    let failures = [
        (labels(&[("kind", "connection")]), c.connection_failures),
        (labels(&[("kind", "session")]), c.session_failures),
    ];
    r.register(
        "actor_failures",
        "Connection and session actors that failed (panicked or errored)",
        counter_family(&failures),
    );
}

fn register_storage(r: &mut Registry, s: &Snapshot) {
    if let Some(stats) = &s.storage {
        r.register(
            "storage_commits",
            "Batches committed to the durable store since it was opened",
            ConstCounter::new(stats.commits),
        );
        r.register(
            "storage_corrupt_records",
            "Stored records skipped because they could not be decoded (logged as storage_corrupt_record)",
            ConstCounter::new(stats.corrupt_records),
        );
    }
    let errors = [
        (labels(&[("kind", "retained")]), s.retained_write_errors),
        (
            labels(&[("kind", "session")]),
            s.counters.session_write_errors,
        ),
    ];
    r.register(
        "storage_write_errors",
        "Writes to the durable store that failed (logged), by kind",
        counter_family(&errors),
    );
}

fn register_bridges(r: &mut Registry, bridges: &[BridgeStats]) {
    let mut queued = Vec::new();
    let mut queued_bytes = Vec::new();
    let (mut sent, mut retried, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    let (mut connected, mut inflight) = (Vec::new(), Vec::new());
    let (mut actor_queued, mut actor_peak) = (Vec::new(), Vec::new());
    let (mut states, mut received, mut latency) = (Vec::new(), Vec::new(), Vec::new());
    for b in bridges {
        let name = b.name.as_str();
        let m = &b.mailbox;
        for (place, n, bytes) in [
            ("memory", m.memory_messages, m.memory_bytes),
            ("disk", m.disk_messages, m.disk_bytes),
        ] {
            let l = labels(&[("bridge", name), ("where", place)]);
            queued.push((l.clone(), n));
            queued_bytes.push((l, bytes));
        }
        let one = labels(&[("bridge", name)]);
        sent.push((one.clone(), b.sent));
        retried.push((one.clone(), b.retried));
        connected.push((one.clone(), u64::from(b.state.is_up())));
        received.push((one.clone(), b.received));
        latency.push((one.clone(), b.latency.clone()));
        actor_queued.push((one.clone(), b.actor_queued));
        actor_peak.push((one.clone(), b.actor_queued_peak));
        inflight.push((one, b.inflight));
        for s in LinkState::ALL {
            let l = labels(&[("bridge", name), ("state", s.as_str())]);
            states.push((l, u64::from(b.state == s)));
        }
        for (reason, n) in &b.dropped {
            dropped.push((labels(&[("bridge", name), ("reason", reason)]), *n));
        }
    }
    r.register(
        "bridge_queued_messages",
        "Messages waiting in a bridge's buffer, in memory or only on disk",
        gauge_family(&queued),
    );
    r.register_with_unit(
        "bridge_queued",
        "Bytes waiting in a bridge's buffer (stored records), in memory or only on disk",
        Unit::Bytes,
        gauge_family(&queued_bytes),
    );
    r.register(
        "bridge_inflight",
        "Messages a bridge sent and the remote has not acknowledged yet",
        gauge_family(&inflight),
    );
    r.register(
        "bridge_actor_queued_messages",
        "Messages from the remote link and wake-ups waiting in a bridge actor's own mailbox (at most 64 packets + 1 wake-up)",
        gauge_family(&actor_queued),
    );
    r.register(
        "bridge_actor_queued_messages_peak",
        "The most messages that waited in a bridge actor's own mailbox since the node started",
        gauge_family(&actor_peak),
    );
    r.register(
        "bridge_connected",
        "1 while a bridge is connected to its remote, else 0",
        gauge_family(&connected),
    );
    r.register(
        "bridge_sent",
        "Messages a bridge delivered (acknowledged by the remote at QoS 1, written at QoS 0)",
        counter_family(&sent),
    );
    r.register(
        "bridge_retried",
        "Messages a bridge sent again (DUP) after a reconnect",
        counter_family(&retried),
    );
    r.register(
        "bridge_dropped",
        "Messages a bridge dropped, by reason",
        counter_family(&dropped),
    );
    r.register(
        "bridge_state",
        "1 for a bridge's current state (connected, connecting, disconnected, blocked), else 0",
        gauge_family(&states),
    );
    r.register(
        "bridge_received",
        "Messages an ingress bridge received from its remote",
        counter_family(&received),
    );
    r.register_with_unit(
        "bridge_latency",
        "Time from a message's arrival in a bridge's buffer to the downstream's acknowledgement",
        Unit::Seconds,
        LatencyFamily(latency),
    );
}

/// One latency histogram per bridge, from the bridge's exact counts.
#[derive(Debug)]
struct LatencyFamily(Vec<(Labels, LatencySnapshot)>);

impl EncodeMetric for LatencyFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            // The snapshot is cumulative; the encoder wants per bucket.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = h
                .buckets
                .iter()
                .map(|&(bound_ms, cumulative)| {
                    let n = cumulative - below;
                    below = cumulative;
                    let bound = if bound_ms == u64::MAX {
                        f64::INFINITY
                    } else {
                        bound_ms as f64 / 1000.0
                    };
                    (bound, n)
                })
                .collect();
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    h.sum_ms as f64 / 1000.0,
                    h.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// VmRSS from `/proc/self/status`, in bytes (Linux only).
pub use roost_actors::alarms::process_rss_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_typed() {
        let s = Snapshot {
            connections: vec![("tcp:default".into(), 3)],
            sessions_online: 2,
            sessions_offline: 1,
            subscriptions: 4,
            routes: 3,
            retained: 1,
            restarts: vec![("broker/router".into(), 1)],
            rss_bytes: Some(4096),
            storage: Some(StorageStats {
                commits: 5,
                corrupt_records: 1,
                ..StorageStats::default()
            }),
            retained_write_errors: 2,
            memory_alarm: true,
            memory_high_watermark: 1000,
            counters: CounterValues {
                received: 7,
                dropped_inbox_full: 2,
                connections_refused: 3,
                publish_rate_limited: 4,
                ..CounterValues::default()
            },
            ..Snapshot::default()
        };
        let text = encode_snapshot(&s);
        for line in [
            "# TYPE roost_connections gauge",
            "roost_connections{listener=\"tcp:default\"} 3",
            "roost_sessions{status=\"online\"} 2",
            "roost_sessions{status=\"offline\"} 1",
            "roost_subscriptions 4",
            "roost_routes 3",
            "roost_retained_messages 1",
            "roost_messages_received_total 7",
            "roost_messages_dropped_total{reason=\"inbox_full\"} 2",
            "roost_supervisor_restarts_total{path=\"broker/router\"} 1",
            "roost_process_resident_memory_bytes 4096",
            "roost_actor_failures_total{kind=\"connection\"} 0",
            "roost_storage_commits_total 5",
            "roost_storage_corrupt_records_total 1",
            "roost_storage_write_errors_total{kind=\"retained\"} 2",
            "roost_storage_write_errors_total{kind=\"session\"} 0",
            "roost_connections_refused_total{reason=\"max_connections\"} 3",
            "roost_connections_refused_total{reason=\"memory\"} 0",
            "roost_connections_rate_limited_total 0",
            "roost_publish_rate_limited_total 4",
            "roost_memory_alarm 1",
            "roost_memory_high_watermark_bytes 1000",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("roost_"), "{line}");
        }
    }
}
