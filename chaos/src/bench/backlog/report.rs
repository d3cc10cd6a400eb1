//! The backlog scenario's report: printed for a terminal, or as one JSON
//! line (`--json`). `failures` lists everything that makes the run fail.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::drain::Drained;
use super::publish::Published;
use super::BacklogConfig;

pub use crate::bench::report::mib;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BacklogReport {
    pub scenario: String,
    #[serde(default)]
    pub label: Option<String>,
    pub params: BacklogParams,
    pub publish: PublishStats,
    #[serde(default)]
    pub drain: Option<DrainStats>,
    pub rss: RssStats,
    pub data_dir: DataDirStats,
    /// Broker RSS, the highest reading of each second.
    #[serde(default)]
    pub rss_timeline: Vec<TimelinePoint>,
    /// Why the run failed; empty when it passed.
    #[serde(default)]
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BacklogParams {
    pub messages: u64,
    pub payload: usize,
    /// messages x payload.
    pub bytes: u64,
    pub publishers: usize,
    pub window: usize,
    pub mqtt_version: u8,
    pub session_expiry_s: u32,
    pub client_id: String,
    pub topic: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishStats {
    pub sent: u64,
    /// PUBACKs with a success code other than 0x10.
    pub acked: u64,
    /// PUBACKs with a reason code >= 0x80.
    pub refused: u64,
    /// PUBACKs with 0x10 (no matching subscribers).
    pub no_subscribers: u64,
    /// Payload bytes of the acknowledged messages.
    pub bytes_acked: u64,
    /// From the first PUBLISH to the last PUBACK.
    pub seconds: f64,
    pub rate_msg_s: f64,
    pub rate_mib_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainStats {
    /// Messages the broker acknowledged: what the subscriber must get.
    pub expected: u64,
    pub received: u64,
    pub in_order: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub unexpected: u64,
    pub corrupt: u64,
    pub wrong_qos: u64,
    pub lost: u64,
    /// From the reconnect's CONNACK to the last expected message.
    pub seconds: f64,
    pub rate_msg_s: f64,
    pub rate_mib_s: f64,
    pub complete: bool,
}

/// Broker RSS, bytes (`None` without `--broker-pid`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RssStats {
    /// Before publishing (subscriber offline, publishers connected).
    pub idle: Option<u64>,
    /// Highest reading while publishing.
    pub publish_peak: Option<u64>,
    /// Right after the last PUBACK.
    pub publish_end: Option<u64>,
    /// After the pause, before the subscriber reconnects.
    pub before_drain: Option<u64>,
    /// Highest reading while draining.
    pub drain_peak: Option<u64>,
    /// Right after the last delivery.
    pub drain_end: Option<u64>,
    /// After the pause that follows the drain.
    pub after_drain: Option<u64>,
}

/// Size of the broker's data dir, bytes (`None` without `--data-dir`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataDirStats {
    pub idle: Option<u64>,
    pub after_publish: Option<u64>,
    pub after_drain: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Whole seconds since sampling started.
    pub t_s: f64,
    pub phase: String,
    pub rss_bytes: u64,
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

impl BacklogReport {
    pub fn new(params: BacklogParams) -> BacklogReport {
        BacklogReport {
            scenario: "backlog".into(),
            params,
            ..BacklogReport::default()
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Publish figures, and a failure for anything not acknowledged.
    pub fn set_publish(&mut self, cfg: &BacklogConfig, p: &Published, seconds: f64) {
        let sum = |f: fn(&super::publish::PublisherResult) -> u64| -> u64 {
            p.publishers.iter().map(f).sum()
        };
        let acked = sum(|r| r.acked);
        let bytes = acked * cfg.payload as u64;
        self.publish = PublishStats {
            sent: sum(|r| r.sent),
            acked,
            refused: sum(|r| r.refused),
            no_subscribers: sum(|r| r.no_subscribers),
            bytes_acked: bytes,
            seconds,
            rate_msg_s: rate(acked, seconds),
            rate_mib_s: rate(bytes, seconds) / (1024.0 * 1024.0),
        };
        for r in &p.publishers {
            if let Some(e) = &r.error {
                self.failures.push(e.clone());
            }
        }
        let s = &self.publish;
        if s.refused > 0 || s.no_subscribers > 0 {
            let codes: Vec<String> = p
                .publishers
                .iter()
                .flat_map(|r| r.reasons.iter())
                .map(|(c, n)| format!("{c:#04x} x{n}"))
                .collect();
            self.failures.push(format!(
                "{} messages refused and {} without subscribers (PUBACK reason codes: {}): \
                 the backlog is short of them (is the queue bound, max_mqueue_len, large enough?)",
                s.refused,
                s.no_subscribers,
                codes.join(", ")
            ));
        }
        if s.acked + s.refused + s.no_subscribers < cfg.messages && self.failures.is_empty() {
            self.failures.push(format!(
                "only {} of {} messages acknowledged",
                s.acked, cfg.messages
            ));
        }
    }

    /// Drain figures, and a failure for every kind of anomaly.
    pub fn set_drain(&mut self, d: &Drained, expected: u64) {
        let bytes = d.in_order.saturating_add(d.reordered) * self.params.payload as u64;
        let unique = d.in_order + d.reordered;
        self.drain = Some(DrainStats {
            expected,
            received: d.received,
            in_order: d.in_order,
            duplicates: d.duplicates,
            reordered: d.reordered,
            unexpected: d.unexpected,
            corrupt: d.corrupt,
            wrong_qos: d.wrong_qos,
            lost: d.lost,
            seconds: d.seconds,
            rate_msg_s: rate(unique, d.seconds),
            rate_mib_s: rate(bytes, d.seconds) / (1024.0 * 1024.0),
            complete: d.complete,
        });
        if let Some(e) = &d.error {
            self.failures.push(format!("drain: {e}"));
        }
        let counts = [
            (d.lost, "lost (acknowledged, never delivered)"),
            (d.duplicates, "duplicated"),
            (d.reordered, "out of order"),
            (d.corrupt, "corrupted (size or bytes differ)"),
            (d.unexpected, "unexpected (not acknowledged to a publisher)"),
            (d.wrong_qos, "delivered at a QoS other than 1"),
        ];
        for (n, what) in counts {
            if n > 0 {
                self.failures.push(format!("drain: {n} messages {what}"));
            }
        }
        if d.lost > 0 && self.publish.refused + self.publish.no_subscribers == 0 {
            // Acknowledged with success, then never delivered.
            self.failures.push(format!(
                "drain: the broker acknowledged every message; one that drops at a full \
                 subscriber queue still does: is its queue bound (Roost: mqtt.max_mqueue_len) \
                 below the {} messages of the backlog?",
                self.params.messages
            ));
        }
        if !d.examples.is_empty() && !self.failures.is_empty() {
            self.failures
                .push(format!("drain, first anomalies: {}", d.examples.join("; ")));
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A summary for a terminal.
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
            "backlog{label}: {} messages x {} B = {:.1} MiB, {} publishers, window {}, mqtt v{}, session {}",
            p.messages,
            p.payload,
            mib(p.bytes),
            p.publishers,
            p.window,
            p.mqtt_version,
            p.client_id
        );
        let s = &self.publish;
        let _ = writeln!(
            out,
            "  publish: {} sent, {} acked, {} refused, {} no subscribers in {:.1}s = {:.0} msg/s ({:.1} MiB/s)",
            s.sent, s.acked, s.refused, s.no_subscribers, s.seconds, s.rate_msg_s, s.rate_mib_s
        );
        if let Some(d) = &self.drain {
            let _ = writeln!(
                out,
                "  drain: {} of {} received in {:.1}s = {:.0} msg/s ({:.1} MiB/s); \
                 lost {} dup {} reordered {} corrupt {} unexpected {}",
                d.in_order + d.reordered,
                d.expected,
                d.seconds,
                d.rate_msg_s,
                d.rate_mib_s,
                d.lost,
                d.duplicates,
                d.reordered,
                d.corrupt,
                d.unexpected
            );
        }
        let r = &self.rss;
        if r.idle.is_some() {
            let m = |v: Option<u64>| v.map_or("-".into(), |b| format!("{:.1}", mib(b)));
            let _ = writeln!(
                out,
                "  broker RSS MiB: idle {}, publish peak {}, end of publish {}, before drain {}, \
                 drain peak {}, end of drain {}, after {}",
                m(r.idle),
                m(r.publish_peak),
                m(r.publish_end),
                m(r.before_drain),
                m(r.drain_peak),
                m(r.drain_end),
                m(r.after_drain)
            );
        }
        let d = &self.data_dir;
        if d.idle.is_some() {
            let m = |v: Option<u64>| v.map_or("-".into(), |b| format!("{:.1}", mib(b)));
            let _ = writeln!(
                out,
                "  data dir MiB: idle {}, after publish {}, after drain {}",
                m(d.idle),
                m(d.after_publish),
                m(d.after_drain)
            );
        }
        human_timeline(&mut out, &self.rss_timeline);
        if self.passed() {
            let _ = writeln!(
                out,
                "  result: PASS (every acknowledged message delivered once, in order)"
            );
        } else {
            let _ = writeln!(out, "  result: FAIL");
            for f in &self.failures {
                let _ = writeln!(out, "  failure: {f}");
            }
        }
        out
    }
}

/// One line per phase: at most 16 readings (MiB), evenly spread.
fn human_timeline(out: &mut String, timeline: &[TimelinePoint]) {
    let mut start = 0;
    while start < timeline.len() {
        let phase = &timeline[start].phase;
        let end = timeline[start..]
            .iter()
            .position(|p| &p.phase != phase)
            .map_or(timeline.len(), |n| start + n);
        let points = &timeline[start..end];
        let step = points.len().div_ceil(16).max(1);
        let values: Vec<String> = points
            .iter()
            .step_by(step)
            .map(|p| format!("{:.0}", mib(p.rss_bytes)))
            .collect();
        let _ = writeln!(
            out,
            "  RSS MiB during {phase} ({}s, every {step}s): {}",
            points.len(),
            values.join(" ")
        );
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_become_failures_and_json_round_trips() {
        let mut r = BacklogReport::new(BacklogParams {
            payload: 100,
            ..BacklogParams::default()
        });
        let d = Drained {
            received: 10,
            in_order: 8,
            duplicates: 2,
            lost: 1,
            seconds: 2.0,
            examples: vec!["message 0/3 arrived again".into()],
            ..Drained::default()
        };
        r.set_drain(&d, 9);
        assert!(!r.passed());
        assert!(r.failures.iter().any(|f| f.contains("1 messages lost")));
        assert!(r
            .failures
            .iter()
            .any(|f| f.contains("2 messages duplicated")));
        assert!(r.human().contains("FAIL"));
        let back: BacklogReport = serde_json::from_str(&r.to_json()).expect("parse");
        assert_eq!(back.drain.map(|d| d.rate_msg_s), Some(4.0));
    }

    #[test]
    fn timeline_lines_are_per_phase() {
        let point = |t: f64, phase: &str| TimelinePoint {
            t_s: t,
            phase: phase.into(),
            rss_bytes: 1 << 20,
        };
        let mut out = String::new();
        human_timeline(
            &mut out,
            &[
                point(0.0, "publish"),
                point(1.0, "publish"),
                point(2.0, "drain"),
            ],
        );
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("publish (2s, every 1s): 1 1"));
    }
}
