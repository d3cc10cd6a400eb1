//! The chaos scenarios: a real cluster ([`Cluster`]) under recorded load
//! ([`Load`]), one kind of fault injected and undone, the time the cluster
//! takes to re-converge, and the history checked ([`check`]).
//!
//! Every scenario runs the same way: start the nodes and wait until they
//! form one cluster; start publishers at QoS 0, 1 and 2 on every node and a
//! subscriber on every node; let the load run; inject the fault (the load
//! keeps running); undo it and measure the time until every running node
//! sees the same members up ([`Cluster::converged`]); let the load run
//! again; stop publishing, wait for the last deliveries, and check.
//! A scenario passes when the checker finds nothing wrong (no acknowledged
//! QoS 1/2 message lost, no QoS 2 duplicate, ...), every fault took effect
//! where it must (a split is seen by the nodes), and the cluster converged
//! within the limit after every fault.
//!
//! The short mode (CI) takes well under a minute per scenario; the long
//! mode repeats the fault several times under more load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use roost_protocol::packet::QoS;
use serde::Serialize;

use crate::history::{check, duplicate_deliveries, lost_stretches, Load, LoadSpec, Verdict};
use crate::nodes::{Cluster, ClusterOptions, NodeState};

/// The broker's partition counters, reported when a node exposes them.
pub const HEAL_METRICS: [&str; 2] = [
    "roost_cluster_partitions_detected_total",
    "roost_cluster_heals_total",
];

/// The cluster's `heartbeat_timeout` (see [`crate::nodes`]).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL a node under load, restart it a few seconds later.
    KillRestart,
    /// A majority and a minority cannot talk, then can again.
    PartitionHeal,
    /// Two nodes (halves) split, then healed.
    TwoNodeSplit,
    /// Three groups that cannot talk to each other, then healed.
    ThreeWaySplit,
    /// Every node killed at once; all but one restart together.
    StalePeerRestart,
    /// The n1–n2 link reset and blocked again and again; the others see both.
    FlappingLink,
    /// A node SIGSTOPped past the heartbeat timeout, then slow links.
    SlowNode,
}

impl Kind {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Kind; 7] = [
        Kind::KillRestart,
        Kind::PartitionHeal,
        Kind::TwoNodeSplit,
        Kind::ThreeWaySplit,
        Kind::StalePeerRestart,
        Kind::FlappingLink,
        Kind::SlowNode,
    ];

    /// The subcommand name, e.g. `kill-restart`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillRestart => "kill-restart",
            Kind::PartitionHeal => "partition-heal",
            Kind::TwoNodeSplit => "two-node-split",
            Kind::ThreeWaySplit => "three-way-split",
            Kind::StalePeerRestart => "stale-peer-restart",
            Kind::FlappingLink => "flapping-link",
            Kind::SlowNode => "slow-node",
        }
    }

    /// The scenario named `name` (as [`Kind::name`] spells it).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Nodes when `--nodes` is not given.
    pub fn default_nodes(self) -> usize {
        match self {
            Kind::TwoNodeSplit => 2,
            _ => 3,
        }
    }

    /// Fewest nodes the scenario means anything with.
    pub fn min_nodes(self) -> usize {
        match self {
            Kind::ThreeWaySplit | Kind::FlappingLink => 3,
            _ => 2,
        }
    }
}

/// Most nodes a scenario runs (each is a process with a store).
pub const MAX_NODES: usize = 9;

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Long mode: more load, the fault repeated, minutes instead of seconds.
    pub long: bool,
    /// Nodes; `None`: [`Kind::default_nodes`].
    pub nodes: Option<usize>,
    /// The `roost` binary.
    pub roost: PathBuf,
    /// Keep the run directory (configs, data, node logs).
    pub keep: bool,
    /// Where run directories are created (default: the system temp dir).
    pub base_dir: Option<PathBuf>,
}

impl Options {
    /// The node count for `kind`, or why it does not fit.
    pub fn nodes_for(&self, kind: Kind) -> Result<usize> {
        let n = self.nodes.unwrap_or(kind.default_nodes());
        if n < kind.min_nodes() || n > MAX_NODES {
            bail!(
                "{} runs with {} to {MAX_NODES} nodes, not {n}",
                kind.name(),
                kind.min_nodes()
            );
        }
        Ok(n)
    }
}

/// Durations and load of a mode.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Load before the first fault.
    warmup: Duration,
    /// How long a fault lasts.
    hold: Duration,
    /// Load after the last fault is undone.
    after: Duration,
    /// Times the fault is injected.
    rounds: usize,
    /// Messages per second of each publisher.
    rate: f64,
    /// Publishers per node and QoS.
    publishers: usize,
    /// Subscribers per node.
    subscribers: usize,
    /// Bound on re-converging after a fault.
    converge_limit: Duration,
    /// Wait for late deliveries: quiet period and bound.
    quiet: Duration,
    finish_limit: Duration,
}

impl Timing {
    fn of(long: bool) -> Timing {
        if long {
            Timing {
                warmup: Duration::from_secs(15),
                hold: Duration::from_secs(20),
                after: Duration::from_secs(15),
                rounds: 4,
                rate: 50.0,
                publishers: 2,
                subscribers: 2,
                converge_limit: Duration::from_secs(60),
                quiet: Duration::from_secs(5),
                finish_limit: Duration::from_secs(90),
            }
        } else {
            Timing {
                warmup: Duration::from_secs(4),
                hold: Duration::from_secs(6),
                after: Duration::from_secs(4),
                rounds: 1,
                rate: 20.0,
                publishers: 1,
                subscribers: 1,
                converge_limit: Duration::from_secs(20),
                quiet: Duration::from_secs(2),
                finish_limit: Duration::from_secs(20),
            }
        }
    }
}

/// One fault as it happened. Times are seconds since the load started.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// What was done, e.g. `partition {n1,n2} | {n3}`.
    pub what: String,
    pub at_s: f64,
    /// Time until the nodes saw it (a peer down), when that is expected.
    pub seen_after_s: Option<f64>,
    /// When it was undone, and how.
    pub undone_at_s: Option<f64>,
    pub undo: String,
    /// Time from the undo until the cluster converged; `None`: it did not.
    pub converged_after_s: Option<f64>,
}

/// The outcome of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    /// `short` or `long`.
    pub mode: String,
    pub nodes: usize,
    pub passed: bool,
    pub duration_s: f64,
    /// Time the fresh cluster took to form.
    pub formed_after_s: Option<f64>,
    /// Publisher `p<i>` of the checker's figures: its first node and QoS.
    pub publishers: Vec<(String, u8)>,
    /// Subscriber `s<j>`'s first node.
    pub subscribers: Vec<String>,
    pub faults: Vec<Fault>,
    /// The checker's figures and failures; `None` if the run stopped before.
    pub verdict: Option<Verdict>,
    /// Per node, the [`HEAL_METRICS`] it exposes.
    pub heal_counters: BTreeMap<String, BTreeMap<String, f64>>,
    /// Why it failed, as the harness saw it: a fault not seen, no
    /// convergence, a node that did not start (the checker's reasons are in
    /// `verdict`).
    pub failures: Vec<String>,
    /// On failure, the last warnings and errors of each node's log.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_logs: BTreeMap<String, String>,
}

impl Report {
    /// The report as text: a headline, the checker's table, the faults.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== {} ({}, {} nodes): {} in {:.1}s",
            self.scenario,
            self.mode,
            self.nodes,
            if self.passed { "PASS" } else { "FAIL" },
            self.duration_s
        );
        if let Some(f) = self.formed_after_s {
            let _ = writeln!(s, "cluster formed in {f:.1}s");
        }
        if !self.publishers.is_empty() {
            let _ = writeln!(s, "clients: {}", self.legend());
        }
        if let Some(v) = &self.verdict {
            let _ = writeln!(s, "{}", v.table().trim_end());
        }
        if !self.faults.is_empty() {
            let _ = writeln!(
                s,
                "{:>7}  {:<44} {:>10}  {:>9}  {:>12}",
                "at", "fault", "seen after", "undone at", "converged in"
            );
        }
        let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}s"));
        for f in &self.faults {
            let _ = writeln!(
                s,
                "{:>6.1}s  {:<44} {:>10}  {:>9}  {:>12}",
                f.at_s,
                f.what,
                secs(f.seen_after_s),
                secs(f.undone_at_s),
                f.converged_after_s
                    .map_or_else(|| "NO".to_owned(), |v| format!("{v:.1}s"))
            );
        }
        for (node, counters) in &self.heal_counters {
            let list: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "{node}: {}", list.join(" "));
        }
        for f in &self.failures {
            let _ = writeln!(s, "FAILURE: {f}");
        }
        s
    }

    /// Where the clients connect first: `p0-p2 n1 (QoS 0,1,2), ...; s0 n1, ...`.
    fn legend(&self) -> String {
        let mut groups: Vec<(usize, usize, &str, Vec<u8>)> = Vec::new();
        for (i, (node, qos)) in self.publishers.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if g.2 == node => {
                    g.1 = i;
                    g.3.push(*qos);
                }
                _ => groups.push((i, i, node, vec![*qos])),
            }
        }
        let pubs: Vec<String> = groups
            .iter()
            .map(|(a, b, node, qos)| {
                let qos: Vec<String> = qos.iter().map(u8::to_string).collect();
                format!("p{a}-p{b} {node} (QoS {})", qos.join(","))
            })
            .collect();
        let subs: Vec<String> = self
            .subscribers
            .iter()
            .enumerate()
            .map(|(j, node)| format!("s{j} {node}"))
            .collect();
        format!("{}; {}", pubs.join(", "), subs.join(", "))
    }

    /// The slowest re-convergence, seconds (`None`: none measured or one
    /// never converged).
    pub fn worst_convergence_s(&self) -> Option<f64> {
        self.faults
            .iter()
            .map(|f| f.converged_after_s)
            .try_fold(None::<f64>, |m, c| {
                c.map(|c| Some(m.map_or(c, |m| m.max(c))))
            })
            .flatten()
    }
}

/// One line per report: scenario, result, duration, faults, slowest
/// convergence, failures (the harness's and the checker's).
pub fn summary(reports: &[Report]) -> String {
    let mut s = format!(
        "{:<20} {:<6} {:<6} {:>8} {:>7} {:>10} {:>9}\n",
        "scenario", "mode", "result", "time", "faults", "converge", "failures"
    );
    for r in reports {
        let _ = writeln!(
            s,
            "{:<20} {:<6} {:<6} {:>7.1}s {:>7} {:>10} {:>9}",
            r.scenario,
            r.mode,
            if r.passed { "PASS" } else { "FAIL" },
            r.duration_s,
            r.faults.len(),
            r.worst_convergence_s()
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}s")),
            r.failures.len() + r.verdict.as_ref().map_or(0, |v| v.failures.len())
        );
    }
    s
}

/// Runs scenario `kind`. Never fails: whatever goes wrong is in the
/// report's failures. Every node is gone when it returns.
pub async fn run(kind: Kind, opts: &Options) -> Report {
    let t0 = Instant::now();
    let mut report = Report {
        scenario: kind.name().to_owned(),
        mode: if opts.long { "long" } else { "short" }.to_owned(),
        nodes: opts.nodes.unwrap_or(kind.default_nodes()),
        passed: false,
        duration_s: 0.0,
        formed_after_s: None,
        publishers: Vec::new(),
        subscribers: Vec::new(),
        faults: Vec::new(),
        verdict: None,
        heal_counters: BTreeMap::new(),
        failures: Vec::new(),
        node_logs: BTreeMap::new(),
    };
    let mut cluster = None;
    if let Err(e) = run_inner(kind, opts, &mut report, &mut cluster).await {
        report.failures.push(format!("{e:#}"));
    }
    if let Some(c) = cluster.as_mut() {
        // A node that died on its own fails the run, whatever the load saw.
        for exit in c.unexpected_exits() {
            // "n2@localhost exited (...) ...": maybe already in a failure.
            let detail = exit.split_once(' ').map_or(exit.as_str(), |(_, d)| d);
            if !report.failures.iter().any(|f| f.contains(detail)) {
                report.failures.push(exit);
            }
        }
    }
    let verdict_ok = report.verdict.as_ref().is_some_and(Verdict::passed);
    report.passed = report.failures.is_empty() && verdict_ok;
    if !report.passed {
        if let Some(c) = &cluster {
            report.node_logs = log_excerpts(c);
        }
    }
    drop(cluster);
    report.duration_s = t0.elapsed().as_secs_f64();
    report
}

async fn run_inner(
    kind: Kind,
    opts: &Options,
    report: &mut Report,
    slot: &mut Option<Cluster>,
) -> Result<()> {
    let n = opts.nodes_for(kind)?;
    let timing = Timing::of(opts.long);
    let cluster_opts = ClusterOptions {
        base_dir: opts.base_dir.clone(),
        keep: opts.keep,
        ..ClusterOptions::default()
    };
    let cluster = slot.insert(Cluster::start(n, &opts.roost, &cluster_opts).await?);
    let formed = cluster
        .converged(timing.converge_limit)
        .await
        .context("the fresh cluster did not form")?;
    report.formed_after_s = Some(formed.as_secs_f64());

    // The member gone for good in stale-peer-restart carries no client.
    let gone = (kind == Kind::StalePeerRestart).then_some(n - 1);
    let client_nodes: Vec<usize> = (0..n).filter(|&i| Some(i) != gone).collect();
    let mut publishers = Vec::new();
    for &node in &client_nodes {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publishers.extend(std::iter::repeat_n((node, qos), timing.publishers));
        }
    }
    let subscribers: Vec<usize> = client_nodes
        .iter()
        .flat_map(|&node| std::iter::repeat_n(node, timing.subscribers))
        .collect();
    let short = |i: usize| short_name(&cluster.node(i).name);
    report.publishers = publishers
        .iter()
        .map(|&(i, q)| (short(i), q as u8))
        .collect();
    report.subscribers = subscribers.iter().map(|&i| short(i)).collect();
    let spec = LoadSpec {
        run_id: format!("{}-{}", kind.name(), std::process::id()),
        nodes: cluster.mqtt_addrs(),
        publishers,
        subscribers,
        rate: timing.rate,
        payload: 64,
    };
    let load = Load::start(spec).await.context("start the load")?;
    let mut run = Run {
        cluster,
        timing,
        start: Instant::now(),
        faults: &mut report.faults,
        failures: &mut report.failures,
    };
    tokio::time::sleep(timing.warmup).await;
    for round in 0..timing.rounds {
        if round > 0 {
            // Service between two rounds.
            tokio::time::sleep(timing.hold / 2).await;
        }
        run.inject(kind, round, gone).await?;
    }
    tokio::time::sleep(timing.after).await;
    load.stop_publishing().await;
    report.heal_counters = heal_counters(run.cluster).await;
    let history = load.finish(timing.quiet, timing.finish_limit).await;
    if opts.keep {
        // Faults, client events, lost stretches and repeated QoS 2
        // deliveries on one time axis (the
        // load's start), for reading a failure against the node logs.
        let mut text = String::from("# faults\n");
        for f in run.faults.iter() {
            let _ = writeln!(
                text,
                "{:>9.3}s {} (undone at {})",
                f.at_s,
                f.what,
                f.undone_at_s.map_or("-".to_owned(), |u| format!("{u:.3}s"))
            );
        }
        text.push_str("# client events\n");
        text.push_str(&history.events_text());
        text.push_str("# acknowledged, never received\n");
        text.push_str(&lost_stretches(&history));
        text.push_str("# QoS 2 messages received again\n");
        text.push_str(&duplicate_deliveries(&history));
        let path = run.cluster.run_dir().join("history.txt");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("roost-chaos: could not write {}: {e}", path.display());
        }
    }
    report.verdict = Some(check(&history));
    Ok(())
}

/// A running scenario: the cluster, and where faults are recorded.
struct Run<'a> {
    cluster: &'a mut Cluster,
    timing: Timing,
    /// When the load started (fault times are relative to it).
    start: Instant,
    faults: &'a mut Vec<Fault>,
    failures: &'a mut Vec<String>,
}

impl Run<'_> {
    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records a fault injected now; its index.
    fn fault(&mut self, what: String) -> usize {
        let at_s = self.now_s();
        self.faults.push(Fault {
            what,
            at_s,
            seen_after_s: None,
            undone_at_s: None,
            undo: String::new(),
            converged_after_s: None,
        });
        self.faults.len() - 1
    }

    /// Waits until every node in `watchers` sees every node of `gone` not
    /// up (at most `limit`); records it, or a failure if they never do.
    async fn seen(&mut self, k: usize, watchers: &[usize], gone: &[usize], limit: Duration) {
        let t0 = Instant::now();
        if self.wait_down(watchers, gone, limit).await {
            self.faults[k].seen_after_s = Some(t0.elapsed().as_secs_f64());
        } else {
            let what = self.faults[k].what.clone();
            self.failures
                .push(format!("{what}: the nodes did not see it within {limit:?}"));
        }
    }

    /// Waits until every node of `watchers` sees every node of `gone` not
    /// up; false if that does not happen within `limit`.
    async fn wait_down(&self, watchers: &[usize], gone: &[usize], limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.sees_down(watchers, gone).await {
                return true;
            }
            if t0.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sees_down(&self, watchers: &[usize], gone: &[usize]) -> bool {
        for &w in watchers {
            let Ok(view) = self.cluster.status(w).await else {
                return false;
            };
            for &g in gone {
                if view.get(&self.cluster.node(g).name).map(String::as_str) == Some("up") {
                    return false;
                }
            }
        }
        true
    }

    /// Records that fault `k` was undone now (`how`), then waits until the
    /// cluster converged; a failure if it does not within the limit.
    async fn undone(&mut self, k: usize, how: &str) {
        self.faults[k].undone_at_s = Some(self.now_s());
        self.faults[k].undo = how.to_owned();
        match self.cluster.converged(self.timing.converge_limit).await {
            Ok(took) => self.faults[k].converged_after_s = Some(took.as_secs_f64()),
            Err(e) => {
                let what = self.faults[k].what.clone();
                self.failures.push(format!("after {what}: {e:#}"));
            }
        }
    }

    /// Sleeps what is left of `hold` since `since`.
    async fn hold_from(&self, since: Instant, hold: Duration) {
        tokio::time::sleep(hold.saturating_sub(since.elapsed())).await;
    }

    async fn inject(&mut self, kind: Kind, round: usize, gone: Option<usize>) -> Result<()> {
        let n = self.cluster.len();
        let hold = self.timing.hold;
        let all: Vec<usize> = (0..n).collect();
        match kind {
            Kind::KillRestart => {
                // The last node first, then the others in turn.
                let victim = n - 1 - round % n;
                let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
                let t0 = Instant::now();
                self.cluster.kill9(victim);
                let k = self.fault(format!("SIGKILL {}", self.name(victim)));
                self.seen(k, &others, &[victim], hold).await;
                self.hold_from(t0, hold).await;
                self.cluster.start_node(victim).await?;
                self.undone(k, "restart").await;
            }
            Kind::PartitionHeal | Kind::TwoNodeSplit | Kind::ThreeWaySplit => {
                let groups = split_groups(kind, n);
                self.split(&groups, hold).await;
            }
            Kind::StalePeerRestart => {
                let gone = gone.unwrap_or(n - 1);
                let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != gone).collect();
                for &i in &all {
                    self.cluster.kill9(i);
                }
                let k = self.fault(format!("SIGKILL all; {} gone for good", self.name(gone)));
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.cluster.start_nodes(&survivors).await?;
                self.undone(k, "restart the others together").await;
                for &s in &survivors {
                    let seen = self.cluster.status(s).await?;
                    let name = &self.cluster.node(gone).name;
                    if seen.get(name).map(String::as_str) != Some("down") {
                        self.failures.push(format!(
                            "{} shows the gone member {name} as {:?}, not down",
                            self.name(s),
                            seen.get(name)
                        ));
                    }
                }
            }
            Kind::FlappingLink => self.flap(round).await,
            Kind::SlowNode => {
                let victim = n - 1 - round % n;
                let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
                let t0 = Instant::now();
                self.cluster.stop(victim)?;
                let k = self.fault(format!("SIGSTOP {}", self.name(victim)));
                let stopped = hold.max(HEARTBEAT_TIMEOUT * 2);
                self.seen(k, &others, &[victim], stopped).await;
                self.hold_from(t0, stopped).await;
                self.cluster.cont(victim)?;
                self.undone(k, "SIGCONT").await;

                // Then slow links for a while: latency and a throttle.
                let proxy = self.cluster.proxy();
                for &o in &others {
                    for (a, b) in [(victim, o), (o, victim)] {
                        proxy.set_latency(a, b, Duration::from_millis(100));
                        proxy.throttle(a, b, 64 * 1024);
                    }
                }
                let k = self.fault(format!("{}'s links: +100ms, 64KiB/s", self.name(victim)));
                tokio::time::sleep(hold).await;
                self.cluster.proxy().heal();
                self.undone(k, "clear").await;
            }
        }
        Ok(())
    }

    /// Partitions into `groups` for `hold`, then heals.
    async fn split(&mut self, groups: &[Vec<usize>], hold: Duration) {
        let t0 = Instant::now();
        self.cluster.proxy().partition(groups);
        let text: Vec<String> = groups
            .iter()
            .map(|g| {
                let names: Vec<String> = g.iter().map(|&i| self.short(i)).collect();
                format!("{{{}}}", names.join(","))
            })
            .collect();
        let k = self.fault(format!("partition {}", text.join(" | ")));
        // Every node sees every node of the other groups down.
        let limit = hold.max(HEARTBEAT_TIMEOUT * 2);
        let t_seen = Instant::now();
        let mut all_seen = true;
        for g in groups {
            let others: Vec<usize> = groups
                .iter()
                .filter(|o| *o != g)
                .flatten()
                .copied()
                .collect();
            let left = limit.saturating_sub(t_seen.elapsed());
            if !self.wait_down(g, &others, left).await {
                all_seen = false;
            }
        }
        if all_seen {
            self.faults[k].seen_after_s = Some(t_seen.elapsed().as_secs_f64());
        } else {
            let what = self.faults[k].what.clone();
            self.failures.push(format!(
                "{what}: the nodes did not see the split within {limit:?}"
            ));
        }
        self.hold_from(t0, limit).await;
        self.cluster.proxy().heal();
        self.undone(k, "heal").await;
    }

    /// The n1–n2 link flaps, the other links untouched: in turn reset,
    /// blocked for less than the heartbeat timeout, and blocked for longer
    /// (then reset), each followed by a second of normal service.
    async fn flap(&mut self, round: usize) {
        let flaps = if self.timing.rounds > 1 { 12 } else { 6 };
        let k = self.fault(format!(
            "n1-n2 link flapping x{flaps} (round {})",
            round + 1
        ));
        for i in 0..flaps {
            let blocked_for = match i % 3 {
                0 => None,
                1 => Some(HEARTBEAT_TIMEOUT / 2),
                _ => Some(HEARTBEAT_TIMEOUT + Duration::from_millis(500)),
            };
            if let Some(d) = blocked_for {
                block_link(self.cluster.proxy(), 0, 1, true);
                tokio::time::sleep(d).await;
                block_link(self.cluster.proxy(), 0, 1, false);
            }
            if blocked_for != Some(HEARTBEAT_TIMEOUT / 2) {
                self.cluster.proxy().reset(0, 1);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.undone(k, "stop flapping").await;
    }

    fn name(&self, i: usize) -> String {
        self.cluster.node(i).name.clone()
    }

    fn short(&self, i: usize) -> String {
        short_name(&self.cluster.node(i).name)
    }
}

/// `n1` for `n1@localhost`.
fn short_name(name: &str) -> String {
    name.split('@').next().unwrap_or(name).to_owned()
}

/// Blocks (or unblocks) both directions between `a` and `b`, leaving every
/// other flow alone.
fn block_link(proxy: &crate::proxy::FaultProxy, a: usize, b: usize, blocked: bool) {
    proxy.set_blocked(a, b, blocked);
    proxy.set_blocked(b, a, blocked);
}

/// The groups of a split scenario with `n` nodes: a majority and a
/// minority (the last nodes); two halves; three groups, round robin.
pub fn split_groups(kind: Kind, n: usize) -> Vec<Vec<usize>> {
    match kind {
        Kind::TwoNodeSplit => vec![(0..n / 2).collect(), (n / 2..n).collect()],
        Kind::ThreeWaySplit => (0..3).map(|g| (g..n).step_by(3).collect()).collect(),
        _ => {
            let minority = ((n - 1) / 2).max(1);
            vec![(0..n - minority).collect(), (n - minority..n).collect()]
        }
    }
}

/// Each running node's [`HEAL_METRICS`], those it exposes.
async fn heal_counters(cluster: &mut Cluster) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for i in 0..cluster.len() {
        if cluster.state(i) != NodeState::Running {
            continue;
        }
        let mut found = BTreeMap::new();
        for m in HEAL_METRICS {
            // A node catching up may answer late: a second chance.
            let v = match cluster.metric(i, m).await {
                None => cluster.metric(i, m).await,
                v => v,
            };
            if let Some(v) = v {
                found.insert(m.to_owned(), v);
            }
        }
        if !found.is_empty() {
            out.insert(cluster.node(i).name.clone(), found);
        }
    }
    out
}

/// The last warnings and errors of each node's log.
fn log_excerpts(cluster: &Cluster) -> BTreeMap<String, String> {
    (0..cluster.len())
        .map(|i| {
            let tail = cluster.log_tail(i, 2000);
            let lines: Vec<&str> = tail
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let last = lines[lines.len().saturating_sub(15)..].join("\n");
            (cluster.node(i).name.clone(), last)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_name("nope"), None);
    }

    #[test]
    fn split_groups_cover_every_node_once() {
        for kind in [Kind::PartitionHeal, Kind::TwoNodeSplit, Kind::ThreeWaySplit] {
            for n in kind.min_nodes()..=MAX_NODES {
                let groups = split_groups(kind, n);
                let mut all: Vec<usize> = groups.iter().flatten().copied().collect();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "{kind:?} {n}");
                assert!(groups.iter().all(|g| !g.is_empty()), "{kind:?} {n}");
            }
        }
        assert_eq!(
            split_groups(Kind::PartitionHeal, 3),
            vec![vec![0, 1], vec![2]]
        );
        assert_eq!(
            split_groups(Kind::PartitionHeal, 5),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(
            split_groups(Kind::ThreeWaySplit, 3),
            vec![vec![0], vec![1], vec![2]]
        );
        assert_eq!(split_groups(Kind::TwoNodeSplit, 2), vec![vec![0], vec![1]]);
    }

    #[test]
    fn node_counts_are_validated() {
        let opts = |nodes| Options {
            long: false,
            nodes,
            roost: PathBuf::from("roost"),
            keep: false,
            base_dir: None,
        };
        assert_eq!(opts(None).nodes_for(Kind::TwoNodeSplit).unwrap(), 2);
        assert_eq!(opts(None).nodes_for(Kind::KillRestart).unwrap(), 3);
        assert!(opts(Some(2)).nodes_for(Kind::ThreeWaySplit).is_err());
        assert!(opts(Some(1)).nodes_for(Kind::KillRestart).is_err());
        assert!(opts(Some(MAX_NODES + 1)).nodes_for(Kind::SlowNode).is_err());
        assert_eq!(opts(Some(5)).nodes_for(Kind::PartitionHeal).unwrap(), 5);
    }
}
