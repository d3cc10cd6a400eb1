//! `roost ctl evacuation start [OPTIONS] | stop | status`: empty this node
//! of its clients and sessions before taking it down (see
//! `roost_cluster::evacuation`).

use clap::Subcommand;
use roost_cluster::evacuation::{
    EvacuationStatus, Stage, DEFAULT_EVICT_RATE, DEFAULT_WAIT_HEALTH_CHECK, DEFAULT_WAIT_TAKEOVER,
};

use super::{render, Client, CtlError, Out};
use crate::mgmt::cluster::EvacuationRequest;

#[derive(Debug, Clone, Subcommand)]
pub enum EvacuationCmd {
    /// Start evacuating the node: readiness turns 503, then new connections
    /// are refused and clients disconnected (0x9C, use another server), then
    /// the sessions left move to other nodes. Stays on (also across a
    /// restart) until `evacuation stop`.
    Start {
        /// Seconds between readiness turning 503 and the first refusal,
        /// for load balancers to take the node out.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_HEALTH_CHECK)]
        wait_health_check: u64,
        /// MQTT 5 Server Reference given to refused and disconnected
        /// clients (HOST:PORT of another node's listener; repeatable).
        #[arg(long, value_name = "HOST:PORT")]
        redirect_to: Vec<String>,
        /// Clients disconnected per second.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_EVICT_RATE)]
        conn_evict_rate: u32,
        /// Node the remaining sessions move to (repeatable; default: every
        /// up member).
        #[arg(long, value_name = "NODE")]
        migrate_to: Vec<String>,
        /// Seconds to wait for disconnected clients to reconnect elsewhere
        /// and take their sessions, before the sessions are moved.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_TAKEOVER)]
        wait_takeover: u64,
        /// Sessions moved per second.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_EVICT_RATE)]
        sess_evict_rate: u32,
    },
    /// Stop the evacuation: the node serves connections and is ready again.
    Stop,
    /// Stage, parameters and progress of the evacuation.
    Status,
}

pub(super) fn run(client: &Client, out: &Out, cmd: &EvacuationCmd) -> Result<String, CtlError> {
    match cmd {
        EvacuationCmd::Start {
            wait_health_check,
            redirect_to,
            conn_evict_rate,
            migrate_to,
            wait_takeover,
            sess_evict_rate,
        } => {
            let req = EvacuationRequest {
                wait_health_check: Some(*wait_health_check),
                redirect_to: Some(redirect_to.clone()),
                conn_evict_rate: Some(*conn_evict_rate),
                migrate_to: Some(migrate_to.clone()),
                wait_takeover: Some(*wait_takeover),
                sess_evict_rate: Some(*sess_evict_rate),
            };
            let body = serde_json::to_value(&req).map_err(|e| CtlError(e.to_string()))?;
            out.show(client.send_json(false, "/api/v1/evacuation", &body)?, |s: &EvacuationStatus| {
                format!("evacuation of {} started\n{}", s.node, status(s))
            })
        }
        EvacuationCmd::Stop => out.show(client.delete("/api/v1/evacuation")?, |s: &EvacuationStatus| {
            format!(
                "evacuation of {} stopped: it serves connections again ({} clients disconnected, {} sessions moved)\n",
                s.node, s.connections_evicted, s.sessions_migrated
            )
        }),
        EvacuationCmd::Status => out.show(client.get("/api/v1/evacuation")?, status),
    }
}

pub fn status(s: &EvacuationStatus) -> String {
    let Some(p) = &s.params else {
        return format!("node {}: not evacuating\n", s.node);
    };
    let list = |v: &[String], none: &str| {
        if v.is_empty() {
            none.to_owned()
        } else {
            v.join(" ")
        }
    };
    let ago = roost_actors::broker::unix_ms().saturating_sub(s.started_ms) / 1000;
    let mut rows = vec![
        ("stage", s.stage.as_str().to_owned()),
        ("started", format!("{} ago", render::duration(ago))),
        (
            "connections",
            format!(
                "{} left, {} disconnected ({}/s)",
                s.connections_left, s.connections_evicted, p.conn_evict_rate
            ),
        ),
        (
            "sessions",
            format!(
                "{} left, {} moved ({}/s)",
                s.sessions_left, s.sessions_migrated, p.sess_evict_rate
            ),
        ),
        (
            "redirect to",
            list(&p.redirect_to, "- (no Server Reference)"),
        ),
        ("migrate to", list(&p.migrate_to, "every up member")),
        (
            "waits",
            format!(
                "health check {}s, takeover {}s",
                p.wait_health_check_secs, p.wait_takeover_secs
            ),
        ),
    ];
    if !s.note.is_empty() {
        rows.push(("note", s.note.clone()));
    }
    if s.job == "rebalance" {
        rows.insert(
            1,
            (
                "targets",
                format!(
                    "{} connections, {} sessions",
                    s.connections_target, s.sessions_target
                ),
            ),
        );
        let what = if s.stage == Stage::Done {
            "took part in"
        } else {
            "takes part in"
        };
        return format!(
            "node {}: {what} a rebalance coordinated by {}\n{}",
            s.node,
            s.coordinator,
            render::pairs(&rows)
        );
    }
    if s.stage == Stage::Done {
        rows.push((
            "next",
            "the node is empty: stop it, or `roost ctl evacuation stop` to serve again".into(),
        ));
    }
    format!("node {}: evacuating\n{}", s.node, render::pairs(&rows))
}
