//! `roost ctl cluster status | join HOST:PORT | leave | force-leave NODE [--force]`.

use clap::Subcommand;
use roost_cluster::ClusterStatus;

use super::{encode, render, Client, CtlError, Out};
use crate::mgmt::cluster::ClusterDone;

#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCmd {
    /// This node and every member it knows: up/down, address, routes, forward queue.
    Status,
    /// Join the cluster of the node at HOST:PORT (its cluster.listen port).
    Join {
        #[arg(value_name = "HOST:PORT")]
        address: String,
    },
    /// Leave the cluster gracefully: the other members forget this node.
    Leave,
    /// Remove a member that is down for good (it is forgotten by every member).
    /// Refused when this node reaches only a minority of the members, or when
    /// another member still sees NODE up (a partition, not a dead node).
    ForceLeave {
        #[arg(value_name = "NODE")]
        node: String,
        /// Remove it even then.
        #[arg(long)]
        force: bool,
    },
}

pub(super) fn run(client: &Client, out: &Out, cmd: &ClusterCmd) -> Result<String, CtlError> {
    match cmd {
        ClusterCmd::Status => out.show(client.get("/api/v1/cluster")?, status),
        ClusterCmd::Join { address } => out.show(
            client.send_json(
                false,
                "/api/v1/cluster/join",
                &serde_json::json!({ "address": address }),
            )?,
            |d: &ClusterDone| format!("joined the cluster of {} (through {address})\n", d.node),
        ),
        ClusterCmd::Leave => out.show(
            client.send_json(false, "/api/v1/cluster/leave", &serde_json::json!({}))?,
            |d: &ClusterDone| format!("{} left the cluster\n", d.node),
        ),
        ClusterCmd::ForceLeave { node, force } => out.show(
            client.delete(&format!(
                "/api/v1/cluster/members/{}{}",
                encode(node),
                if *force { "?force=true" } else { "" }
            ))?,
            |d: &ClusterDone| format!("{} removed from the cluster\n", d.node),
        ),
    }
}

fn since(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let now = roost_actors::broker::unix_ms();
    format!("{} ago", render::duration(now.saturating_sub(ms) / 1000))
}

pub fn status(s: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}  node {}  listen {}  discovery {}\n",
        s.cluster, s.node, s.listen, s.discovery
    );
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            let node = if m.local {
                format!("{} (this node)", m.node)
            } else {
                m.node.clone()
            };
            let status = if m.reason.is_empty() {
                m.status.clone()
            } else {
                format!("{} ({})", m.status, m.reason)
            };
            vec![
                node,
                status,
                m.address.clone(),
                m.routes.to_string(),
                if m.local {
                    "-".into()
                } else {
                    format!("{} ({} dropped)", m.forward_queue, m.forward_dropped)
                },
                if m.local {
                    "-".into()
                } else {
                    since(m.last_seen_ms)
                },
            ]
        })
        .collect();
    out.push_str(&render::table(
        &[
            "NODE",
            "STATUS",
            "ADDRESS",
            "ROUTES",
            "FORWARD QUEUE",
            "LAST SEEN",
        ],
        &rows,
    ));
    out
}
