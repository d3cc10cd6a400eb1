//! Publisher/subscriber scenarios: a [`Topology`] says who publishes on which
//! topic and who subscribes to what; [`run`] drives it through the phases of
//! a run:
//!
//! 1. connect and subscribe every subscriber, then connect the publishers;
//! 2. publish through the warm-up and the measurement window, sampling the
//!    counters and the broker at both edges of the window;
//! 3. stop the publishers (waiting for outstanding PUBACKs), then let the
//!    subscribers drain until everything sent has arrived or nothing has
//!    arrived for a while;
//! 4. stop the subscribers and account for every message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytestring::ByteString;
use roost_protocol::packet::QoS;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::load::{self, LatencyWindow, PubCounters, PublisherPlan, SubCounters, SubOutcome};
use super::payload::HEADER_LEN;
use super::report::{BrokerStats, DrainEnd, Drained, FlowStats, Latency, Params, Report};
use super::track::{Counts, SeqTracker};
use super::{broker_sample, open_all, qos_u8, BenchConfig};
use crate::procstat::ProcSample;

/// After the publishers stop, how long to wait for outstanding PUBACKs.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The drain ends when nothing new arrived for this long...
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// ...or after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// `SO_SNDBUF` of publishers: keeps the backlog a QoS 0 publisher can
/// queue in its own kernel buffer small, so "sent" is close to what the
/// broker has read and latency is not dominated by client-side queueing.
const PUBLISHER_SNDBUF: u32 = 64 * 1024;
/// How long stopped tasks get to hand back their results, on top of the
/// waits they have themselves. With the other bounds, everything after the
/// window fits in 26 s, inside the 30 s of the hard deadline.
const JOIN_WAIT: Duration = Duration::from_secs(3);

/// Who publishes where and who subscribes to what.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: &'static str,
    /// Topic of each publisher; publisher ids are indexes.
    pub publishers: Vec<ByteString>,
    /// Filter of each subscriber and the publishers it should hear from.
    pub subscribers: Vec<(String, Vec<u32>)>,
    /// Per-publisher rate, messages per second; `None`: as fast as allowed.
    pub rate: Option<f64>,
}

impl Topology {
    /// `n` publishers on `bench/fanin/<i>`, one subscriber on `bench/fanin/#`.
    pub fn fan_in(n: usize) -> Topology {
        Topology {
            name: "fan-in",
            publishers: (0..n)
                .map(|i| ByteString::from(format!("bench/fanin/{i}")))
                .collect(),
            subscribers: vec![("bench/fanin/#".into(), ids(n))],
            rate: None,
        }
    }

    /// One publisher on `bench/fanout`, `n` subscribers of it.
    pub fn fan_out(n: usize) -> Topology {
        Topology {
            name: "fan-out",
            publishers: vec![ByteString::from_static("bench/fanout")],
            subscribers: (0..n).map(|_| ("bench/fanout".into(), vec![0])).collect(),
            rate: None,
        }
    }

    /// `n` publisher -> subscriber pairs on `bench/pairs/<i>`.
    pub fn pairs(n: usize) -> Topology {
        Topology {
            name: "pairs",
            publishers: (0..n)
                .map(|i| ByteString::from(format!("bench/pairs/{i}")))
                .collect(),
            subscribers: (0..n)
                .map(|i| (format!("bench/pairs/{i}"), vec![i as u32]))
                .collect(),
            rate: None,
        }
    }

    /// One publisher at `rate` messages per second, one subscriber.
    pub fn latency(rate: f64) -> Topology {
        Topology {
            name: "latency",
            publishers: vec![ByteString::from_static("bench/latency")],
            subscribers: vec![("bench/latency".into(), vec![0])],
            rate: Some(rate),
        }
    }
}

fn ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| i as u32).collect()
}

/// Counters and broker usage at one instant.
struct Snapshot {
    at: Instant,
    sent: u64,
    received: u64,
    broker: Option<ProcSample>,
}

/// The running tasks of a flow and their live counters.
struct Running {
    pubs: Vec<JoinHandle<Result<()>>>,
    pub_counters: Vec<Arc<PubCounters>>,
    subs: Vec<JoinHandle<Result<SubOutcome>>>,
    sub_counters: Vec<Arc<SubCounters>>,
    stop_subs: watch::Sender<bool>,
}

impl Running {
    fn snapshot(&self, cfg: &BenchConfig) -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            sent: self
                .pub_counters
                .iter()
                .map(|c| c.sent.load(Ordering::Relaxed))
                .sum(),
            received: self
                .sub_counters
                .iter()
                .map(|c| c.received.load(Ordering::Relaxed))
                .sum(),
            broker: broker_sample(cfg)?,
        })
    }

    fn sent(&self) -> Vec<u64> {
        self.pub_counters
            .iter()
            .map(|c| c.sent.load(Ordering::Relaxed))
            .collect()
    }

    fn unique(&self) -> u64 {
        self.sub_counters
            .iter()
            .map(|c| c.unique.load(Ordering::Relaxed))
            .sum()
    }
}

/// Runs `topo` against the broker in `cfg` and reports.
pub async fn run(cfg: &BenchConfig, topo: Topology) -> Result<Report> {
    if topo.publishers.is_empty() || topo.subscribers.is_empty() {
        bail!(
            "{}: needs at least one publisher and one subscriber",
            topo.name
        );
    }
    crate::rlimit::ensure_nofile((topo.publishers.len() + topo.subscribers.len()) as u64 + 64)?;
    let subs = connect_subscribers(cfg, &topo).await?;
    tokio::time::sleep(cfg.settle).await;
    let pubs = connect_publishers(cfg, topo.publishers.len()).await?;
    let epoch = Instant::now();
    let window_end = epoch + cfg.warmup + cfg.duration;
    let running = start(cfg, &topo, subs, pubs, epoch, window_end)?;
    tokio::time::sleep_until(epoch + cfg.warmup).await;
    let first = running.snapshot(cfg)?;
    tokio::time::sleep_until(window_end).await;
    let last = running.snapshot(cfg)?;
    finish(cfg, &topo, running, first, last).await
}

async fn connect_subscribers(
    cfg: &BenchConfig,
    topo: &Topology,
) -> Result<Vec<crate::client::Client>> {
    let subs = open_all(topo.subscribers.len(), |i| {
        let mut opts = cfg.connect_options(&format!("sub{i}"), None);
        opts.port = cfg.sub_port.unwrap_or(cfg.port);
        let filter = topo.subscribers[i].0.clone();
        let (qos, wait) = (cfg.qos, cfg.connect_timeout);
        async move {
            let mut client = crate::client::Client::connect(&opts).await?;
            client.subscribe(&filter, qos, wait).await?;
            Ok(client)
        }
    })
    .await;
    subs.into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("subscriber {i}")))
        .collect()
}

async fn connect_publishers(cfg: &BenchConfig, n: usize) -> Result<Vec<crate::client::Client>> {
    let pubs = open_all(n, |i| {
        let mut opts = cfg.connect_options(&format!("pub{i}"), None);
        opts.send_buffer = Some(PUBLISHER_SNDBUF);
        async move { crate::client::Client::connect(&opts).await }
    })
    .await;
    pubs.into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("publisher {i}")))
        .collect()
}

/// Spawns every subscriber, then every publisher.
fn start(
    cfg: &BenchConfig,
    topo: &Topology,
    subs: Vec<crate::client::Client>,
    pubs: Vec<crate::client::Client>,
    epoch: Instant,
    window_end: Instant,
) -> Result<Running> {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let latency = LatencyWindow {
        epoch,
        from_ns: nanos(cfg.warmup),
        to_ns: nanos(cfg.warmup + cfg.duration),
    };
    let (stop_subs, stop_rx) = watch::channel(false);
    let mut running = Running {
        pubs: vec![],
        pub_counters: vec![],
        subs: vec![],
        sub_counters: vec![],
        stop_subs,
    };
    for client in subs {
        let counters = Arc::new(SubCounters::default());
        let tracker = SeqTracker::new(topo.publishers.len());
        let task =
            load::run_subscriber(client, tracker, latency, counters.clone(), stop_rx.clone());
        running.subs.push(tokio::spawn(task));
        running.sub_counters.push(counters);
    }
    for (id, client) in pubs.into_iter().enumerate() {
        let plan = PublisherPlan {
            id: id as u32,
            topic: topo.publishers[id].clone(),
            qos: cfg.qos,
            payload_len: cfg.payload,
            rate: topo.rate,
            window: cfg.window,
            epoch,
            stop_at: window_end,
            ack_wait: ACK_WAIT,
        };
        let counters = Arc::new(PubCounters::default());
        running.pubs.push(tokio::spawn(load::run_publisher(
            client,
            plan,
            counters.clone(),
        )));
        running.pub_counters.push(counters);
    }
    Ok(running)
}

/// What the run left behind once every task stopped.
struct Collected {
    sent: Vec<u64>,
    acked: Option<u64>,
    rejected: Option<u64>,
    expected: u64,
    outcomes: Vec<(usize, SubOutcome)>,
    errors: Vec<String>,
    drained: Drained,
}

/// Deliveries a subscriber hearing from `sources` should get.
fn expected_for(sources: &[u32], sent: &[u64]) -> u64 {
    sources
        .iter()
        .map(|&p| sent.get(p as usize).copied().unwrap_or(0))
        .sum()
}

/// Stops publishers, drains, stops subscribers, builds the report.
async fn finish(
    cfg: &BenchConfig,
    topo: &Topology,
    mut running: Running,
    first: Snapshot,
    last: Snapshot,
) -> Result<Report> {
    let mut errors = Vec::new();
    // One deadline for all: tasks stop in parallel, so must their joins.
    let pubs_deadline = Instant::now() + load::WRITE_GRACE + ACK_WAIT + JOIN_WAIT;
    for (i, task) in std::mem::take(&mut running.pubs).into_iter().enumerate() {
        match tokio::time::timeout_at(pubs_deadline, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(format!("publisher {i}: {e:#}")),
            Ok(Err(e)) => errors.push(format!("publisher {i}: task failed: {e}")),
            Err(_) => errors.push(format!("publisher {i}: did not stop in time")),
        }
    }
    let sent = running.sent();
    let expected = topo
        .subscribers
        .iter()
        .map(|(_, src)| expected_for(src, &sent))
        .sum();
    let drained = drain(&running, expected).await;
    let _ = running.stop_subs.send(true);
    let mut outcomes = Vec::new();
    let subs_deadline = Instant::now() + JOIN_WAIT;
    for (i, task) in running.subs.into_iter().enumerate() {
        match tokio::time::timeout_at(subs_deadline, task).await {
            Ok(Ok(Ok(outcome))) => outcomes.push((i, outcome)),
            Ok(Ok(Err(e))) => errors.push(format!("subscriber {i}: {e:#}")),
            Ok(Err(e)) => errors.push(format!("subscriber {i}: task failed: {e}")),
            Err(_) => errors.push(format!("subscriber {i}: did not stop in time")),
        }
    }
    let qos1 = cfg.qos == QoS::AtLeastOnce;
    let total = |f: fn(&PubCounters) -> &AtomicU64| -> u64 {
        running
            .pub_counters
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum()
    };
    let acked = qos1.then(|| total(|c| &c.acked));
    let rejected = qos1.then(|| total(|c| &c.rejected));
    let collected = Collected {
        sent,
        acked,
        rejected,
        expected,
        outcomes,
        errors,
        drained,
    };
    build_report(cfg, topo, collected, &first, &last)
}

/// Waits until `expected` distinct deliveries arrived, or nothing new came
/// for [`DRAIN_IDLE`], or [`DRAIN_MAX`] passed.
async fn drain(running: &Running, expected: u64) -> Drained {
    let started = Instant::now();
    let mut last_unique = running.unique();
    let mut last_progress = Instant::now();
    let end = loop {
        if last_unique >= expected {
            break DrainEnd::Complete;
        }
        if started.elapsed() >= DRAIN_MAX {
            break DrainEnd::CutOff;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let unique = running.unique();
        if unique != last_unique {
            last_unique = unique;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= DRAIN_IDLE {
            break DrainEnd::Idle;
        }
    };
    Drained {
        end,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn build_report(
    cfg: &BenchConfig,
    topo: &Topology,
    c: Collected,
    first: &Snapshot,
    last: &Snapshot,
) -> Result<Report> {
    let mut errors = c.errors;
    let mut counts = Counts::default();
    let mut lost = 0;
    let mut latency = load::new_histogram()?;
    for (i, outcome) in &c.outcomes {
        counts.add(&outcome.tracker.counts());
        lost += outcome.tracker.lost(&c.sent, &topo.subscribers[*i].1);
        let _ = latency.add(&outcome.latency);
        if let Some(e) = &outcome.error {
            errors.push(format!("subscriber {i}: {e}"));
        }
    }
    // A subscriber whose task failed received nothing we can count.
    let missing: u64 = (0..topo.subscribers.len())
        .filter(|i| !c.outcomes.iter().any(|(j, _)| j == i))
        .map(|i| expected_for(&topo.subscribers[i].1, &c.sent))
        .sum();
    let wall = last.at.duration_since(first.at).as_secs_f64();
    let in_window = last.received.saturating_sub(first.received);
    let rate = |n: u64| if wall > 0.0 { n as f64 / wall } else { 0.0 };
    let flow = FlowStats {
        sent: c.sent.iter().sum(),
        acked: c.acked,
        rejected: c.rejected,
        expected: c.expected,
        received: counts.received,
        unique: counts.unique,
        lost: lost + missing,
        duplicates: counts.duplicates,
        reordered: counts.reordered,
        unexpected: counts.unexpected,
        send_rate: rate(last.sent.saturating_sub(first.sent)),
        receive_rate: rate(in_window),
        drain: c.drained.end,
        drain_s: c.drained.seconds,
    };
    let broker = match (cfg.broker_pid, first.broker, last.broker) {
        (Some(pid), Some(a), Some(b)) => Some(BrokerStats::new(pid, a, b, wall, in_window)),
        _ => None,
    };
    Ok(Report {
        scenario: topo.name.to_string(),
        label: None,
        params: params(cfg, topo),
        measured_s: wall,
        flow: Some(flow),
        latency_us: Latency::from_histogram(&latency),
        broker,
        idle: None,
        errors,
    })
}

fn params(cfg: &BenchConfig, topo: &Topology) -> Params {
    Params {
        qos: qos_u8(cfg.qos),
        payload: cfg.payload.max(HEADER_LEN),
        mqtt_version: cfg.version.level(),
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        publishers: topo.publishers.len(),
        subscribers: topo.subscribers.len(),
        rate: topo.rate,
        window: cfg.window,
        connections: None,
    }
}
