//! `roost ctl rebalance start [OPTIONS] | stop | status`: move part of the
//! clients and sessions of busy nodes to idle ones, e.g. after a
//! scale-out (see `roost_cluster::rebalance`). The node it runs against
//! coordinates.

use clap::Subcommand;
use roost_cluster::evacuation::{
    DEFAULT_EVICT_RATE, DEFAULT_WAIT_HEALTH_CHECK, DEFAULT_WAIT_TAKEOVER,
};
use roost_cluster::rebalance::{RebalanceStatus, DEFAULT_ABS_THRESHOLD, DEFAULT_REL_THRESHOLD};

use super::{render, Client, CtlError, Out};
use crate::mgmt::cluster::RebalanceRequest;

#[derive(Debug, Clone, Subcommand)]
pub enum RebalanceCmd {
    /// Plan and start: nodes above the mean load by both thresholds give
    /// clients (disconnected with 0x9C, they reconnect through the load
    /// balancer) and offline sessions to the others, down to the mean.
    Start {
        /// A node to balance (repeatable; default: this node and every up member).
        #[arg(long = "nodes", value_name = "NODE")]
        nodes: Vec<String>,
        /// Clients disconnected per second on each donor.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_EVICT_RATE)]
        conn_evict_rate: u32,
        /// Sessions moved per second from each donor.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_EVICT_RATE)]
        sess_evict_rate: u32,
        /// A donor has this many connections more than the mean, at least.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_ABS_THRESHOLD)]
        abs_conn_threshold: u64,
        /// ... and this many times the mean, at least.
        #[arg(long, value_name = "RATIO", default_value_t = DEFAULT_REL_THRESHOLD)]
        rel_conn_threshold: f64,
        /// Same for sessions.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_ABS_THRESHOLD)]
        abs_sess_threshold: u64,
        #[arg(long, value_name = "RATIO", default_value_t = DEFAULT_REL_THRESHOLD)]
        rel_sess_threshold: f64,
        /// Seconds a donor is unready (503) before it refuses connections.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_HEALTH_CHECK)]
        wait_health_check: u64,
        /// Seconds for disconnected clients to take their sessions along
        /// before offline sessions are moved.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_TAKEOVER)]
        wait_takeover: u64,
    },
    /// Stop the rebalance this node coordinates: its donors serve again.
    Stop,
    /// The plan and each donor's progress.
    Status,
}

pub(super) fn run(client: &Client, out: &Out, cmd: &RebalanceCmd) -> Result<String, CtlError> {
    match cmd {
        RebalanceCmd::Start {
            nodes,
            conn_evict_rate,
            sess_evict_rate,
            abs_conn_threshold,
            rel_conn_threshold,
            abs_sess_threshold,
            rel_sess_threshold,
            wait_health_check,
            wait_takeover,
        } => {
            let req = RebalanceRequest {
                nodes: Some(nodes.clone()),
                conn_evict_rate: Some(*conn_evict_rate),
                sess_evict_rate: Some(*sess_evict_rate),
                abs_conn_threshold: Some(*abs_conn_threshold),
                rel_conn_threshold: Some(*rel_conn_threshold),
                abs_sess_threshold: Some(*abs_sess_threshold),
                rel_sess_threshold: Some(*rel_sess_threshold),
                wait_health_check: Some(*wait_health_check),
                wait_takeover: Some(*wait_takeover),
            };
            let body = serde_json::to_value(&req).map_err(|e| CtlError(e.to_string()))?;
            out.show(
                client.send_json(false, "/api/v1/rebalance", &body)?,
                |s: &RebalanceStatus| {
                    let head = if s.stage == "balanced" {
                        "the nodes are balanced within the thresholds: nothing to move\n"
                    } else {
                        "rebalance started\n"
                    };
                    format!("{head}{}", status(s))
                },
            )
        }
        RebalanceCmd::Stop => out.show(
            client.delete("/api/v1/rebalance")?,
            |s: &RebalanceStatus| {
                let moved: u64 = s.donors.iter().map(|d| d.sessions_migrated).sum();
                let kicked: u64 = s.donors.iter().map(|d| d.connections_evicted).sum();
                format!(
                    "rebalance stopped: the donors serve again ({kicked} clients disconnected, {moved} sessions moved)\n"
                )
            },
        ),
        RebalanceCmd::Status => out.show(client.get("/api/v1/rebalance")?, status),
    }
}

pub fn status(s: &RebalanceStatus) -> String {
    let mut out = format!("coordinator {}  stage {}\n", s.coordinator, s.stage);
    let Some(plan) = &s.plan else {
        return out;
    };
    let donor = |n: &str| plan.donors.iter().find(|d| d.node == n);
    let part = |n: &str| s.donors.iter().find(|d| d.node == n);
    let rows: Vec<Vec<String>> = plan
        .loads
        .iter()
        .map(|l| {
            let (role, target, progress) = match (donor(&l.node), part(&l.node)) {
                (Some(d), p) => (
                    match (
                        d.connections_target < l.connections,
                        d.sessions_target < l.sessions,
                    ) {
                        (true, false) => "donor (connections), recipient".to_owned(),
                        (false, true) => "donor (sessions)".to_owned(),
                        _ => "donor".to_owned(),
                    },
                    format!("{} / {}", d.connections_target, d.sessions_target),
                    match p {
                        Some(p) if p.job == "rebalance" => format!(
                            "{}: {} disconnected, {} moved",
                            p.stage.as_str(),
                            p.connections_evicted,
                            p.sessions_migrated
                        ),
                        Some(p) if p.job.is_empty() => "ended".to_owned(),
                        Some(p) => format!("busy with an {}", p.job),
                        None if s.silent.contains(&l.node) => "no answer".to_owned(),
                        None => "-".to_owned(),
                    },
                ),
                (None, _) => ("recipient".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            vec![
                l.node.clone(),
                role,
                format!("{} / {}", l.connections, l.sessions),
                target,
                progress,
            ]
        })
        .collect();
    out.push_str(&render::table(
        &[
            "NODE",
            "ROLE",
            "CONNECTIONS / SESSIONS AT START",
            "TARGET",
            "PROGRESS",
        ],
        &rows,
    ));
    out
}
