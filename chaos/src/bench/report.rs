//! The result of one bench run: a serde struct printed either as a
//! human-readable summary or as one line of JSON (`--json`), which
//! [`super::table`] reads back to compare brokers.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procstat::ProcSample;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// Free text from `--label`, e.g. the broker's name.
    #[serde(default)]
    pub label: Option<String>,
    pub params: Params,
    /// Length of the measurement window actually observed, seconds.
    pub measured_s: f64,
    #[serde(default)]
    pub flow: Option<FlowStats>,
    #[serde(default)]
    pub latency_us: Option<Latency>,
    #[serde(default)]
    pub broker: Option<BrokerStats>,
    #[serde(default)]
    pub idle: Option<IdleStats>,
    /// Errors of individual clients; the run itself completed.
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Params {
    pub qos: u8,
    pub payload: usize,
    pub mqtt_version: u8,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub publishers: usize,
    pub subscribers: usize,
    #[serde(default)]
    pub rate: Option<f64>,
    pub window: usize,
    #[serde(default)]
    pub connections: Option<usize>,
}

/// Message accounting over the whole run (warm-up and drain included);
/// rates over the measurement window only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowStats {
    /// PUBLISHes written by all publishers.
    pub sent: u64,
    /// Successful PUBACKs received by publishers (QoS 1 only).
    #[serde(default)]
    pub acked: Option<u64>,
    /// PUBACKs refusing the message (5.0 reason >= 0x80; QoS 1 only).
    #[serde(default)]
    pub rejected: Option<u64>,
    /// Deliveries expected: each message times its matching subscribers.
    pub expected: u64,
    pub received: u64,
    pub unique: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub unexpected: u64,
    /// Messages per second written by the publishers in the window.
    pub send_rate: f64,
    /// Deliveries per second received by the subscribers in the window.
    pub receive_rate: f64,
    /// How the drain after the window ended.
    #[serde(default)]
    pub drain: DrainEnd,
    /// Length of the drain, seconds.
    #[serde(default)]
    pub drain_s: f64,
}

/// Why the drain (publishers stopped, subscribers still receiving) ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainEnd {
    /// Every message sent arrived: `lost` is 0.
    #[default]
    Complete,
    /// Nothing arrived for a while: what is missing was dropped.
    Idle,
    /// Still arriving when the drain's time ran out: `lost` includes
    /// messages the broker still held.
    CutOff,
}

/// The drain's outcome, as measured.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    pub end: DrainEnd,
    pub seconds: f64,
}

/// Publish-to-delivery latency of messages sent inside the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram in nanoseconds; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// The broker process over the measurement window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrokerStats {
    pub pid: u32,
    /// User + system CPU seconds used in the window.
    pub cpu_s: f64,
    /// CPU seconds per wall second in the window (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Broker CPU microseconds per message received in the window.
    #[serde(default)]
    pub cpu_us_per_msg: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

impl BrokerStats {
    pub fn new(
        pid: u32,
        start: ProcSample,
        end: ProcSample,
        wall_s: f64,
        messages: u64,
    ) -> BrokerStats {
        let cpu_s = end.cpu.saturating_sub(start.cpu).as_secs_f64();
        BrokerStats {
            pid,
            cpu_s,
            cpu_cores: if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 },
            cpu_us_per_msg: (messages > 0).then(|| cpu_s * 1e6 / messages as f64),
            rss_start_bytes: start.rss_bytes,
            rss_end_bytes: end.rss_bytes,
        }
    }
}

/// The `idle` scenario's results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleStats {
    pub requested: usize,
    pub established: usize,
    pub failed: usize,
    #[serde(default)]
    pub first_error: Option<String>,
    /// Time to establish them all, seconds.
    pub connect_s: f64,
    pub connections_per_s: f64,
    /// Broker RSS after (settled) minus before, bytes.
    #[serde(default)]
    pub rss_delta_bytes: Option<i64>,
    #[serde(default)]
    pub rss_per_connection_bytes: Option<f64>,
    #[serde(default)]
    pub cpu_us_per_connection: Option<f64>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A few lines for a terminal.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let p = &self.params;
        let label = self
            .label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}{label}: qos {} payload {}B mqtt v{} pubs {} subs {} window {:.1}s",
            self.scenario,
            p.qos,
            p.payload,
            p.mqtt_version,
            p.publishers,
            p.subscribers,
            self.measured_s
        );
        if let Some(f) = &self.flow {
            human_flow(&mut out, f);
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                out,
                "  latency us: p50 {:.0}  p99 {:.0}  p999 {:.0}  max {:.0}  ({} samples)",
                l.p50, l.p99, l.p999, l.max, l.count
            );
        }
        if let Some(i) = &self.idle {
            human_idle(&mut out, i);
        }
        if let Some(b) = &self.broker {
            human_broker(&mut out, b);
        }
        for e in &self.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }
}

fn human_flow(out: &mut String, f: &FlowStats) {
    let _ = writeln!(
        out,
        "  throughput: {:.0} msg/s received, {:.0} msg/s sent",
        f.receive_rate, f.send_rate
    );
    let mut acked = f.acked.map(|a| format!(" acked {a}")).unwrap_or_default();
    if let Some(r) = f.rejected.filter(|&r| r > 0) {
        acked.push_str(&format!(" rejected {r}"));
    }
    let _ = writeln!(
        out,
        "  sent {}{acked} expected {} received {} lost {} dup {} reordered {} unexpected {}",
        f.sent, f.expected, f.received, f.lost, f.duplicates, f.reordered, f.unexpected
    );
    let drain = match f.drain {
        DrainEnd::Complete => "everything arrived",
        DrainEnd::Idle => "deliveries stopped: the missing messages were dropped",
        DrainEnd::CutOff => "cut off while messages were still arriving: lost includes them",
    };
    let _ = writeln!(out, "  drain {:.1}s: {drain}", f.drain_s);
}

fn human_idle(out: &mut String, i: &IdleStats) {
    let _ = writeln!(
        out,
        "  connections: {}/{} established ({} failed) in {:.2}s = {:.0} conn/s",
        i.established, i.requested, i.failed, i.connect_s, i.connections_per_s
    );
    if let Some(per) = i.rss_per_connection_bytes {
        let _ = writeln!(out, "  broker RSS per connection: {per:.0} B");
    }
    if let Some(cpu) = i.cpu_us_per_connection {
        let _ = writeln!(out, "  broker CPU per connection: {cpu:.1} us");
    }
    if let Some(e) = &i.first_error {
        let _ = writeln!(out, "  first connect error: {e}");
    }
}

fn human_broker(out: &mut String, b: &BrokerStats) {
    let per_msg = b
        .cpu_us_per_msg
        .map(|c| format!(", {c:.2} us/msg"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  broker pid {}: cpu {:.2}s ({:.2} cores){per_msg}; rss {:.1} -> {:.1} MiB",
        b.pid,
        b.cpu_s,
        b.cpu_cores,
        mib(b.rss_start_bytes),
        mib(b.rss_end_bytes)
    );
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let r = Report {
            scenario: "fan-in".into(),
            label: Some("mosquitto".into()),
            flow: Some(FlowStats {
                sent: 10,
                received: 9,
                lost: 1,
                ..FlowStats::default()
            }),
            ..Report::default()
        };
        let back: Report = serde_json::from_str(&r.to_json()).expect("parse");
        assert_eq!(back.label.as_deref(), Some("mosquitto"));
        assert_eq!(back.flow.map(|f| f.lost), Some(1));
        assert!(r.human().contains("lost 1"));
    }
}
