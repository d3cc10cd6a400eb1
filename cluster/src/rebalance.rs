//! Cluster load rebalancing (DESIGN.md §6): after a scale-out or a node's
//! restart, connections stay piled on the old nodes. `roost ctl rebalance
//! start`, on any node, makes that node the coordinator:
//!
//! 1. it asks every node of the rebalance (`--nodes`, default this node
//!    and every up member) how many clients are connected and how many
//!    sessions it holds;
//! 2. it plans ([`plan`], a pure function): a node is a *donor* when its
//!    count is above the mean by more than the absolute threshold *and*
//!    more than the relative one (EMQX's `abs_*_threshold`,
//!    `rel_*_threshold`), for connections or for sessions. A donor gets
//!    down to the mean (rounded up) in what it gives. Sessions move to the
//!    *recipients*: the nodes that do not give sessions (one that gives
//!    only connections may receive sessions). Evicted clients go where the
//!    load balancer sends them;
//! 3. it orders each donor's `evacuation` actor to run its part
//!    ([`crate::evacuation::Job::Rebalance`]): readiness 503 for
//!    `wait_health_check`, new connections refused (0x9C), connected
//!    clients disconnected (0x9C) at `conn_evict_rate` until the target is
//!    left (they reconnect through the load balancer, now sent to the
//!    recipients), `wait_takeover`, then offline sessions moved to the
//!    recipients at `sess_evict_rate` until the target is left; then the
//!    donor serves and is ready again.
//!
//! `status` asks the donors how far they are; `stop` stops them. The
//! coordinator keeps the run in memory only (EMQX does the same): a
//! restarted coordinator forgets it, and a restarted donor ends its part.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::evacuation::{EvacuationMsg, EvacuationParams, EvacuationStatus, Job};
use crate::shared::{ClusterShared, EvacuationError};
use crate::takeover;

/// EMQX's defaults.
pub const DEFAULT_ABS_THRESHOLD: u64 = 1000;
pub const DEFAULT_REL_THRESHOLD: f64 = 1.1;

/// How a rebalance runs (`roost ctl rebalance start` options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebalanceParams {
    /// The nodes to balance; empty: this node and every up member.
    pub nodes: Vec<String>,
    pub conn_evict_rate: u32,
    pub sess_evict_rate: u32,
    pub abs_conn_threshold: u64,
    pub rel_conn_threshold: f64,
    pub abs_sess_threshold: u64,
    pub rel_sess_threshold: f64,
    pub wait_health_check_secs: u64,
    pub wait_takeover_secs: u64,
}

impl Default for RebalanceParams {
    fn default() -> Self {
        let e = EvacuationParams::default();
        RebalanceParams {
            nodes: Vec::new(),
            conn_evict_rate: e.conn_evict_rate,
            sess_evict_rate: e.sess_evict_rate,
            abs_conn_threshold: DEFAULT_ABS_THRESHOLD,
            rel_conn_threshold: DEFAULT_REL_THRESHOLD,
            abs_sess_threshold: DEFAULT_ABS_THRESHOLD,
            rel_sess_threshold: DEFAULT_REL_THRESHOLD,
            wait_health_check_secs: e.wait_health_check_secs,
            wait_takeover_secs: e.wait_takeover_secs,
        }
    }
}

impl RebalanceParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.conn_evict_rate == 0 || self.sess_evict_rate == 0 {
            return Err("conn_evict_rate and sess_evict_rate must be at least 1 per second".into());
        }
        for (name, v) in [
            ("rel_conn_threshold", self.rel_conn_threshold),
            ("rel_sess_threshold", self.rel_sess_threshold),
        ] {
            if !v.is_finite() || v < 1.0 {
                return Err(format!(
                    "{name} must be a number of at least 1.0 (a ratio to the mean), got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// One node's load, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub node: String,
    /// Connected clients.
    pub connections: u64,
    /// Sessions, connected or not.
    pub sessions: u64,
}

/// A donor and what it gets down to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Donor {
    pub node: String,
    pub connections_target: u64,
    pub sessions_target: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub loads: Vec<NodeLoad>,
    pub donors: Vec<Donor>,
    /// Where donors' sessions move: the nodes that give no sessions.
    pub recipients: Vec<String>,
}

/// Whether `v` is above `mean` by more than both thresholds.
fn over(v: u64, mean: f64, abs: u64, rel: f64) -> bool {
    let v = v as f64;
    v - mean > abs as f64 && v > mean * rel
}

/// Who gives and how much (see the module doc). Every node computes the
/// same plan from the same loads; the order of the loads does not matter.
pub fn plan(mut loads: Vec<NodeLoad>, p: &RebalanceParams) -> Plan {
    loads.sort_by(|a, b| a.node.cmp(&b.node));
    let n = loads.len().max(1) as f64;
    let mean_c = loads.iter().map(|l| l.connections).sum::<u64>() as f64 / n;
    let mean_s = loads.iter().map(|l| l.sessions).sum::<u64>() as f64 / n;
    let mut donors = Vec::new();
    let mut recipients = Vec::new();
    for l in &loads {
        let give_c = over(
            l.connections,
            mean_c,
            p.abs_conn_threshold,
            p.rel_conn_threshold,
        );
        let give_s = over(
            l.sessions,
            mean_s,
            p.abs_sess_threshold,
            p.rel_sess_threshold,
        );
        if !give_s {
            recipients.push(l.node.clone());
        }
        if give_c || give_s {
            donors.push(Donor {
                node: l.node.clone(),
                connections_target: if give_c {
                    mean_c.ceil() as u64
                } else {
                    l.connections
                },
                sessions_target: if give_s {
                    mean_s.ceil() as u64
                } else {
                    l.sessions
                },
            });
        }
    }
    Plan {
        loads,
        donors,
        recipients,
    }
}

/// A rebalance coordinated by this node.
#[derive(Debug, Clone)]
pub struct RebalanceRun {
    pub params: RebalanceParams,
    pub plan: Plan,
    pub started_ms: u64,
}

/// `roost ctl rebalance status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebalanceStatus {
    /// This node (the coordinator).
    pub coordinator: String,
    /// `off`, `balanced` (nothing to move when it was started), `running`,
    /// `done` (every donor finished its part).
    pub stage: String,
    pub started_ms: u64,
    pub params: Option<RebalanceParams>,
    pub plan: Option<Plan>,
    /// Each donor's part as it reports it.
    pub donors: Vec<EvacuationStatus>,
    /// Donors that did not answer.
    pub silent: Vec<String>,
}

/// What a coordinator asks a node (over the takeover actors' wire).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RebalanceAsk {
    Load,
    Start { job: Job, params: EvacuationParams },
    Status,
    Stop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RebalanceAnswer {
    Load(NodeLoad),
    Status(EvacuationStatus),
}

/// Longest the coordinator waits for a node's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// This node's answer to `ask` from `coordinator`.
pub async fn answer(
    shared: &ClusterShared,
    coordinator: &str,
    ask: RebalanceAsk,
) -> Result<RebalanceAnswer, String> {
    let evacuator = || {
        shared
            .evacuator
            .read()
            .clone()
            .ok_or_else(|| "the evacuation actor is not running (restarting?)".to_owned())
    };
    let ms = ASK_TIMEOUT.as_millis() as u64 * 4 / 5;
    match ask {
        RebalanceAsk::Load => {
            let infos = roost_actors::registry::session_infos(&shared.ctx).await?;
            Ok(RebalanceAnswer::Load(NodeLoad {
                node: shared.settings.node_name.clone(),
                connections: infos.iter().filter(|i| i.connected).count() as u64,
                sessions: infos.len() as u64,
            }))
        }
        RebalanceAsk::Status => {
            let e = evacuator()?;
            ractor::call_t!(e, EvacuationMsg::Status, ms)
                .map(RebalanceAnswer::Status)
                .map_err(|e| e.to_string())
        }
        RebalanceAsk::Start { job, params } => {
            let e = evacuator()?;
            ractor::call_t!(e, |r| EvacuationMsg::StartPart(job, params, r), ms)
                .map_err(|e| e.to_string())?
                .map(RebalanceAnswer::Status)
        }
        RebalanceAsk::Stop => {
            let e = evacuator()?;
            let who = coordinator.to_owned();
            ractor::call_t!(e, |r| EvacuationMsg::StopPart(who, r), ms)
                .map_err(|e| e.to_string())?
                .map(RebalanceAnswer::Status)
        }
    }
}

/// Ask `nodes` (this node included or not): answers by node, and the
/// nodes that did not answer.
async fn ask(
    shared: &Arc<ClusterShared>,
    nodes: &[String],
    ask: RebalanceAsk,
) -> (Vec<(String, Result<RebalanceAnswer, String>)>, Vec<String>) {
    let me = shared.settings.node_name.clone();
    let mut answers = Vec::new();
    if nodes.contains(&me) {
        answers.push((me.clone(), answer(shared, &me, ask.clone()).await));
    }
    let peers: Vec<String> = nodes.iter().filter(|n| **n != me).cloned().collect();
    let (remote, silent) = takeover::ask_rebalance(shared, &peers, ask, ASK_TIMEOUT).await;
    answers.extend(remote);
    (answers, silent)
}

fn status_of(me: &str, run: Option<&RebalanceRun>) -> RebalanceStatus {
    RebalanceStatus {
        coordinator: me.to_owned(),
        stage: "off".into(),
        started_ms: run.map_or(0, |r| r.started_ms),
        params: run.map(|r| r.params.clone()),
        plan: run.map(|r| r.plan.clone()),
        donors: Vec::new(),
        silent: Vec::new(),
    }
}

/// Plan and start a rebalance coordinated by this node.
pub async fn start(
    shared: &Arc<ClusterShared>,
    params: RebalanceParams,
) -> Result<RebalanceStatus, EvacuationError> {
    params.validate().map_err(EvacuationError::Invalid)?;
    let me = shared.settings.node_name.clone();
    if let Some(running) = status(shared).await.filter(|s| s.stage == "running") {
        return Err(EvacuationError::Conflict(format!(
            "a rebalance coordinated by this node is running (donors: {}); stop it first",
            running
                .donors
                .iter()
                .map(|d| d.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let up = shared.up_peer_names();
    let nodes: Vec<String> = if params.nodes.is_empty() {
        std::iter::once(me.clone())
            .chain(up.iter().cloned())
            .collect()
    } else {
        for n in &params.nodes {
            if *n != me && !up.contains(n) {
                return Err(EvacuationError::Invalid(format!(
                    "{n} is not an up member of this cluster (up: {})",
                    std::iter::once(me.as_str())
                        .chain(up.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut n = params.nodes.clone();
        n.sort();
        n.dedup();
        n
    };
    if nodes.len() < 2 {
        return Err(EvacuationError::Invalid(
            "a rebalance needs at least two up nodes".into(),
        ));
    }
    let (answers, silent) = ask(shared, &nodes, RebalanceAsk::Load).await;
    let mut loads = Vec::new();
    let mut failed = silent;
    for (node, a) in answers {
        match a {
            Ok(RebalanceAnswer::Load(l)) => loads.push(l),
            Ok(_) => failed.push(format!("{node} (unexpected answer)")),
            Err(e) => failed.push(format!("{node} ({e})")),
        }
    }
    if !failed.is_empty() {
        return Err(EvacuationError::Failed(format!(
            "cannot read the load of {}",
            failed.join(", ")
        )));
    }
    let plan = plan(loads, &params);
    let run = RebalanceRun {
        params: params.clone(),
        plan: plan.clone(),
        started_ms: roost_actors::broker::unix_ms(),
    };
    info!(loads = ?plan.loads, donors = ?plan.donors, "rebalance_planned");
    *shared.rebalance.lock() = Some(run.clone());
    if plan.donors.is_empty() {
        let mut s = status_of(&me, Some(&run));
        s.stage = "balanced".into();
        return Ok(s);
    }
    let evac = EvacuationParams {
        wait_health_check_secs: params.wait_health_check_secs,
        redirect_to: Vec::new(),
        conn_evict_rate: params.conn_evict_rate,
        migrate_to: plan.recipients.clone(),
        wait_takeover_secs: params.wait_takeover_secs,
        sess_evict_rate: params.sess_evict_rate,
    };
    let mut started = Vec::new();
    let mut refused = Vec::new();
    for d in &plan.donors {
        let job = Job::Rebalance {
            coordinator: me.clone(),
            connections: d.connections_target,
            sessions: d.sessions_target,
        };
        let order = RebalanceAsk::Start {
            job,
            params: evac.clone(),
        };
        let (answers, silent) = ask(shared, std::slice::from_ref(&d.node), order).await;
        match answers.into_iter().next() {
            Some((_, Ok(RebalanceAnswer::Status(s)))) => started.push(s),
            Some((node, Err(e))) => refused.push(format!("{node}: {e}")),
            _ => refused.extend(silent.into_iter().map(|n| format!("{n}: no answer"))),
        }
    }
    if !refused.is_empty() {
        warn!(refused = ?refused, "rebalance_refused");
        let nodes: Vec<String> = started.iter().map(|s| s.node.clone()).collect();
        let _ = ask(shared, &nodes, RebalanceAsk::Stop).await;
        *shared.rebalance.lock() = None;
        return Err(EvacuationError::Conflict(format!(
            "a donor refused its part, so nothing runs: {}",
            refused.join("; ")
        )));
    }
    let mut s = status_of(&me, Some(&run));
    s.stage = "running".into();
    s.donors = started;
    Ok(s)
}

/// The rebalance this node coordinates, with its donors' progress; `None`
/// when there is none.
pub async fn status(shared: &Arc<ClusterShared>) -> Option<RebalanceStatus> {
    let run = shared.rebalance.lock().clone()?;
    let me = shared.settings.node_name.clone();
    let mut s = status_of(&me, Some(&run));
    if run.plan.donors.is_empty() {
        s.stage = "balanced".into();
        return Some(s);
    }
    let nodes: Vec<String> = run.plan.donors.iter().map(|d| d.node.clone()).collect();
    let (answers, silent) = ask(shared, &nodes, RebalanceAsk::Status).await;
    s.silent = silent;
    for (node, a) in answers {
        match a {
            Ok(RebalanceAnswer::Status(st)) => s.donors.push(st),
            _ => s.silent.push(node),
        }
    }
    s.donors.sort_by(|a, b| a.node.cmp(&b.node));
    // A donor whose part is over (done, or ended by its restart: off)
    // is finished; one still busy with this rebalance keeps it running.
    let busy = s
        .donors
        .iter()
        .any(|d| d.job == "rebalance" && d.coordinator == me && d.stage.as_str() != "done");
    s.stage = if busy || !s.silent.is_empty() {
        "running".into()
    } else {
        "done".into()
    };
    Some(s)
}

/// Stop the rebalance this node coordinates: its donors serve again.
pub async fn stop(shared: &Arc<ClusterShared>) -> Result<RebalanceStatus, EvacuationError> {
    let Some(run) = shared.rebalance.lock().clone() else {
        return Err(EvacuationError::Conflict(
            "no rebalance coordinated by this node is running".into(),
        ));
    };
    let me = shared.settings.node_name.clone();
    let nodes: Vec<String> = run.plan.donors.iter().map(|d| d.node.clone()).collect();
    let (answers, silent) = ask(shared, &nodes, RebalanceAsk::Stop).await;
    let mut s = status_of(&me, Some(&run));
    // A donor whose part was over already answers an error: nothing to
    // stop there.
    for (_, a) in answers {
        if let Ok(RebalanceAnswer::Status(st)) = a {
            s.donors.push(st);
        }
    }
    s.silent = silent;
    *shared.rebalance.lock() = None;
    info!(donors = ?nodes, "rebalance_stopped");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(node: &str, connections: u64, sessions: u64) -> NodeLoad {
        NodeLoad {
            node: node.into(),
            connections,
            sessions,
        }
    }

    fn params(abs: u64, rel: f64) -> RebalanceParams {
        RebalanceParams {
            abs_conn_threshold: abs,
            rel_conn_threshold: rel,
            abs_sess_threshold: abs,
            rel_sess_threshold: rel,
            ..RebalanceParams::default()
        }
    }

    #[test]
    fn a_new_empty_node_takes_from_the_old_ones() {
        // Scale-out: n3 joined with nothing.
        let p = plan(
            vec![
                load("n1", 6000, 6000),
                load("n2", 6000, 6500),
                load("n3", 0, 0),
            ],
            &params(1000, 1.1),
        );
        let donors: Vec<(&str, u64, u64)> = p
            .donors
            .iter()
            .map(|d| (d.node.as_str(), d.connections_target, d.sessions_target))
            .collect();
        assert_eq!(donors, vec![("n1", 4000, 4167), ("n2", 4000, 4167)]);
        assert_eq!(p.recipients, vec!["n3".to_owned()]);
    }

    #[test]
    fn both_thresholds_must_be_exceeded() {
        // 1,500 above the mean but only 1.04x of it: balanced enough.
        let p = plan(
            vec![load("a", 40_000, 0), load("b", 37_000, 0)],
            &params(1000, 1.1),
        );
        assert!(p.donors.is_empty());
        // 20x the mean but 19 above it: under the absolute threshold.
        let p = plan(vec![load("a", 20, 0), load("b", 0, 0)], &params(1000, 1.1));
        assert!(p.donors.is_empty());
        let p = plan(vec![load("a", 20, 0), load("b", 0, 0)], &params(1, 1.1));
        assert_eq!(p.donors.len(), 1);
        assert_eq!(p.donors[0].connections_target, 10);
        // Sessions are not over: the donor keeps its count as the target.
        assert_eq!(p.donors[0].sessions_target, 0);
    }

    #[test]
    fn wrong_thresholds_are_refused() {
        assert!(params(1, 0.9)
            .validate()
            .unwrap_err()
            .contains("at least 1.0"));
        assert!(params(1, f64::NAN).validate().is_err());
        assert!(RebalanceParams::default().validate().is_ok());
    }

    proptest! {
        /// Every node computes the same plan whatever the order it got the
        /// loads in; donors and recipients split the nodes; a donor is
        /// above the mean by both thresholds and gets down to the mean,
        /// never below, in what it gives, and keeps the rest.
        #[test]
        fn plans_are_deterministic_and_move_only_the_excess(
            counts in proptest::collection::vec((0u64..100_000, 0u64..100_000), 1..8),
            abs in 0u64..5000,
            rel in 1.0f64..3.0,
            rotate in 0usize..8,
        ) {
            let loads: Vec<NodeLoad> = counts
                .iter()
                .enumerate()
                .map(|(i, (c, s))| load(&format!("n{i}"), *c, *s))
                .collect();
            let p = params(abs, rel);
            let a = plan(loads.clone(), &p);
            let mut other = loads.clone();
            other.rotate_left(rotate % loads.len());
            prop_assert_eq!(&a, &plan(other, &p));
            // Every node gives, receives sessions, or both (a donor of
            // connections only); a donor of sessions never receives them.
            for l in &loads {
                let donor = a.donors.iter().find(|d| d.node == l.node);
                let receives = a.recipients.contains(&l.node);
                prop_assert!(donor.is_some() || receives);
                if let Some(d) = donor {
                    prop_assert_eq!(receives, d.sessions_target == l.sessions);
                }
            }
            let n = loads.len() as f64;
            let mean_c = counts.iter().map(|x| x.0).sum::<u64>() as f64 / n;
            let mean_s = counts.iter().map(|x| x.1).sum::<u64>() as f64 / n;
            for d in &a.donors {
                let l = loads.iter().find(|l| l.node == d.node).unwrap();
                let (give_c, give_s) = (
                    over(l.connections, mean_c, abs, rel),
                    over(l.sessions, mean_s, abs, rel),
                );
                prop_assert!(give_c || give_s);
                // Down to the mean of what it gives, never below; the
                // rest kept as it is.
                for (give, target, have, mean) in [
                    (give_c, d.connections_target, l.connections, mean_c),
                    (give_s, d.sessions_target, l.sessions, mean_s),
                ] {
                    if give {
                        prop_assert!(target < have);
                        prop_assert!(target as f64 >= mean);
                    } else {
                        prop_assert_eq!(target, have);
                    }
                }
            }
            // Not everyone can be above the mean: sessions have somewhere
            // to go.
            prop_assert!(!a.recipients.is_empty());
        }
    }
}
