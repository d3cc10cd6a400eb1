//! The `idle` scenario: open many connections that only CONNECT (keep alive
//! spread over 60..300 s) and measure how fast the broker accepts them and
//! how much memory each one costs it.
//!
//! Phases: one probe connection proves the broker accepts clients; warm-up
//! pause; broker sample; open the connections (new attempts stop once
//! `--duration` has elapsed); broker sample; settle 2 s; broker sample;
//! close everything.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::load::CLOSE_WAIT;
use super::report::{BrokerStats, IdleStats, Params, Report};
use super::{broker_sample, open_all, qos_u8, BenchConfig};
use crate::client::Client;
use crate::procstat::ProcSample;

/// Pause between opening the connections and the memory reading.
const SETTLE: Duration = Duration::from_secs(2);
/// Bound on closing every connection.
const CLOSE_ALL_WAIT: Duration = Duration::from_secs(10);

/// Keep alive of connection `i`: spread over 60..=300 s, deterministic.
fn keep_alive(i: usize) -> u16 {
    60 + ((i.wrapping_mul(7919)) % 241) as u16
}

/// Broker readings at the edges of the phases.
struct Samples {
    before: Option<ProcSample>,
    connected: Option<ProcSample>,
    settled: Option<ProcSample>,
}

pub async fn run(cfg: &BenchConfig, connections: usize) -> Result<Report> {
    crate::rlimit::ensure_nofile(connections as u64 + 64)?;
    let probe = Client::connect(&cfg.connect_options("idle-probe", Some(60)))
        .await
        .context("probe connection")?;
    probe.disconnect(CLOSE_WAIT).await;
    tokio::time::sleep(cfg.warmup).await;
    let before = broker_sample(cfg)?;
    let started = Instant::now();
    let (clients, first_error) = open_connections(cfg, connections, started + cfg.duration).await;
    let connect_s = started.elapsed().as_secs_f64();
    let connected = broker_sample(cfg)?;
    tokio::time::sleep(SETTLE).await;
    let settled = broker_sample(cfg)?;
    let established = clients.len();
    close_all(clients).await;

    let samples = Samples {
        before,
        connected,
        settled,
    };
    let mut idle = idle_stats(&samples, established, connect_s);
    idle.requested = connections;
    idle.failed = connections - established;
    idle.first_error = first_error;
    let broker = match (cfg.broker_pid, before, settled) {
        (Some(pid), Some(a), Some(b)) => {
            let wall = connect_s + SETTLE.as_secs_f64();
            Some(BrokerStats::new(pid, a, b, wall, 0))
        }
        _ => None,
    };
    Ok(Report {
        broker,
        ..report(cfg, connections, connect_s, idle)
    })
}

/// Opens up to `n` connections, making no new attempt after `stop_opening`.
/// Returns the open ones and the first error, if any.
async fn open_connections(
    cfg: &BenchConfig,
    n: usize,
    stop_opening: Instant,
) -> (Vec<Client>, Option<String>) {
    let results = open_all(n, |i| {
        let opts = cfg.connect_options(&format!("idle{i}"), Some(keep_alive(i)));
        async move {
            if Instant::now() >= stop_opening {
                return Err(anyhow!("not attempted: --duration elapsed"));
            }
            Client::connect(&opts).await
        }
    })
    .await;
    let mut clients = Vec::with_capacity(results.len());
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    (clients, first_error)
}

/// Rates and per-connection costs from the broker readings.
fn idle_stats(s: &Samples, established: usize, connect_s: f64) -> IdleStats {
    let per = |x: f64| (established > 0).then(|| x / established as f64);
    let rss_delta = match (s.before, s.settled) {
        (Some(a), Some(b)) => Some(b.rss_bytes as i64 - a.rss_bytes as i64),
        _ => None,
    };
    let cpu_us = match (s.before, s.connected) {
        (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e6),
        _ => None,
    };
    IdleStats {
        established,
        connect_s,
        connections_per_s: if connect_s > 0.0 {
            established as f64 / connect_s
        } else {
            0.0
        },
        rss_delta_bytes: rss_delta,
        rss_per_connection_bytes: rss_delta.and_then(|d| per(d as f64)),
        cpu_us_per_connection: cpu_us.and_then(per),
        ..IdleStats::default()
    }
}

fn report(cfg: &BenchConfig, connections: usize, connect_s: f64, idle: IdleStats) -> Report {
    Report {
        scenario: "idle".into(),
        label: None,
        params: Params {
            qos: qos_u8(cfg.qos),
            payload: 0,
            mqtt_version: cfg.version.level(),
            duration_s: cfg.duration.as_secs_f64(),
            warmup_s: cfg.warmup.as_secs_f64(),
            publishers: 0,
            subscribers: 0,
            rate: None,
            window: 0,
            connections: Some(connections),
        },
        measured_s: connect_s,
        flow: None,
        latency_us: None,
        broker: None,
        idle: Some(idle),
        errors: vec![],
    }
}

/// Sends DISCONNECT on every connection concurrently, within a bound;
/// whatever is left is dropped (closed) when the set is.
async fn close_all(clients: Vec<Client>) {
    let mut set = JoinSet::new();
    for c in clients {
        set.spawn(c.disconnect(CLOSE_WAIT));
    }
    let _ = tokio::time::timeout(CLOSE_ALL_WAIT, async {
        while set.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_span_60_to_300_seconds() {
        let all: Vec<u16> = (0..10_000).map(keep_alive).collect();
        assert_eq!(all.iter().min(), Some(&60));
        assert_eq!(all.iter().max(), Some(&300));
    }
}
