//! `roost-chaos bench`: load scenarios against any MQTT broker.
//!
//! Scenarios: `fan-in`, `fan-out`, `pairs`, `latency` (all run by
//! [`flow`]: publishers and subscribers exchanging stamped messages) and
//! `idle` ([`idle`]: many connections doing nothing). Each one warms up,
//! measures over the requested duration, drains, closes its connections and
//! returns a [`Report`].
//!
//! `backlog` ([`backlog`]) is sized by volume, not time: an offline
//! persistent session's queue is filled, measured and drained, with its own
//! config, report and time limit; it does not go through [`run`].
//!
//! Invariants:
//! - a run never outlives its hard deadline (warm-up + duration + 30 s):
//!   every wait on the broker has its own timeout, and [`run`] wraps the
//!   whole scenario in one more;
//! - counts are exact (see [`track`]); rates cover the measurement window only.

pub mod backlog;
pub mod flow;
pub mod idle;
pub mod load;
pub mod payload;
pub mod report;
pub mod table;
pub mod track;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use roost_protocol::packet::{ProtocolVersion, QoS};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use report::Report;

use crate::client::{Client, ConnectOptions};

/// Added to warm-up + duration to form the hard deadline of a run.
const HARD_DEADLINE_EXTRA: Duration = Duration::from_secs(30);
/// Connection attempts in flight at once.
const CONNECT_CONCURRENCY: usize = 128;

/// Options shared by every scenario.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub host: String,
    pub port: u16,
    /// Where subscribers connect, when not `port` (cross-node runs).
    pub sub_port: Option<u16>,
    /// Pause between the subscriptions and the first publish.
    pub settle: Duration,
    /// The broker's pid, for CPU and RSS figures.
    pub broker_pid: Option<u32>,
    pub duration: Duration,
    pub warmup: Duration,
    pub qos: QoS,
    /// Payload bytes (at least the 20-byte stamp).
    pub payload: usize,
    pub version: ProtocolVersion,
    /// Unacknowledged QoS 1 messages per publisher.
    pub window: usize,
    /// Bounds each connect, CONNACK and SUBACK wait.
    pub connect_timeout: Duration,
    pub label: Option<String>,
}

impl BenchConfig {
    /// The hard deadline of a whole run.
    pub fn hard_deadline(&self) -> Duration {
        self.warmup + self.duration + HARD_DEADLINE_EXTRA
    }

    /// CONNECT options for client `name`. Load clients never ping, so their
    /// keep alive outlasts the run.
    pub fn connect_options(&self, name: &str, keep_alive: Option<u16>) -> ConnectOptions {
        let run_secs = self.hard_deadline().as_secs() + 60;
        let default_keep_alive = u16::try_from(run_secs).unwrap_or(u16::MAX).max(60);
        ConnectOptions {
            host: self.host.clone(),
            port: self.port,
            client_id: format!("roost-bench-{}-{name}", run_tag()),
            version: self.version,
            keep_alive: keep_alive.unwrap_or(default_keep_alive),
            clean_start: true,
            timeout: self.connect_timeout,
            send_buffer: None,
            session_expiry: None,
        }
    }
}

/// The scenario to run, with its own parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    FanIn { publishers: usize },
    FanOut { subscribers: usize },
    Pairs { pairs: usize },
    Latency { rate: f64 },
    Idle { connections: usize },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::FanIn { .. } => "fan-in",
            Scenario::FanOut { .. } => "fan-out",
            Scenario::Pairs { .. } => "pairs",
            Scenario::Latency { .. } => "latency",
            Scenario::Idle { .. } => "idle",
        }
    }
}

/// Runs `scenario` within its hard deadline.
pub async fn run(cfg: &BenchConfig, scenario: &Scenario) -> Result<Report> {
    let deadline = cfg.hard_deadline();
    let work = async {
        let mut report = match scenario {
            Scenario::FanIn { publishers } => {
                flow::run(cfg, flow::Topology::fan_in(*publishers)).await
            }
            Scenario::FanOut { subscribers } => {
                flow::run(cfg, flow::Topology::fan_out(*subscribers)).await
            }
            Scenario::Pairs { pairs } => flow::run(cfg, flow::Topology::pairs(*pairs)).await,
            Scenario::Latency { rate } => flow::run(cfg, flow::Topology::latency(*rate)).await,
            Scenario::Idle { connections } => idle::run(cfg, *connections).await,
        }?;
        report.label.clone_from(&cfg.label);
        Ok(report)
    };
    tokio::time::timeout(deadline, work).await.map_err(|_| {
        anyhow!(
            "{}: hard deadline of {deadline:?} exceeded",
            scenario.name()
        )
    })?
}

/// A tag unique to this process, so client ids of concurrent runs differ.
fn run_tag() -> u32 {
    std::process::id()
}

/// Opens `n` clients, at most [`CONNECT_CONCURRENCY`] at a time, with
/// `open(i)` for client `i`. Results come back in index order.
pub async fn open_all<F, Fut>(n: usize, open: F) -> Vec<Result<Client>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Client>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let fut = open(i);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<Result<Client>>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, result)) = joined {
            out[i] = Some(result);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow!("connect task panicked"))))
        .collect()
}

/// The broker's CPU and RSS now, if a pid was given. A failure to read
/// procfs (the broker died) is an error: the figures would be meaningless.
fn broker_sample(cfg: &BenchConfig) -> Result<Option<crate::procstat::ProcSample>> {
    cfg.broker_pid.map(crate::procstat::sample).transpose()
}

fn qos_u8(qos: QoS) -> u8 {
    qos as u8
}
