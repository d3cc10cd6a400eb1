//! `roost ctl`: the operator CLI, a client of a node's management API
//! (`crate::mgmt`).
//!
//! ```text
//! roost ctl [--node URL] [--token T | --data-dir DIR] [--json] COMMAND
//!   status
//!   cluster status | join HOST:PORT | leave | force-leave NODE
//!   clients list [--match PATTERN] | show ID | kick ID
//!   subscriptions list [--client ID]
//!   routes list
//!   retained list | show TOPIC | delete TOPIC
//!   bridges list | show NAME | restart NAME | pause NAME | resume NAME
//!   tree
//!   restart PATH
//!   metrics
//!   log level [LEVEL]
//! ```
//!
//! The token: `--token`, else `ROOST_TOKEN`, else `DIR/mgmt.token` (the
//! file a node generates in its data directory; `--data-dir`, default
//! `./data`). Exit codes: 0 ok, 1 the operation failed (the node refused it,
//! or could not be reached), 2 usage error (clap).

mod client;
pub mod cluster;
pub mod evacuation;
pub mod rebalance;
pub mod render;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

pub use client::{encode, Client, CtlError};

use crate::mgmt::token;
use crate::mgmt::types::{
    BridgeDetail, BridgeSummary, ClientSummary, Deleted, Kicked, List, LogLevel, Restarted,
    RetainedMessage, RetainedSummary, RouteEntry, SubscriptionEntry, TreeEntry,
};

/// Where `roost ctl` looks for a node by default (`mgmt.listen`'s default).
pub const DEFAULT_NODE_URL: &str = "http://127.0.0.1:18083";

#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// The node's management API.
    #[arg(long, value_name = "URL", default_value = DEFAULT_NODE_URL, value_parser = parse_node_url)]
    pub node: String,
    /// Bearer token of the management API.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ROOST_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The node's data directory, to read the token it generated
    /// (DIR/mgmt.token) when neither --token nor ROOST_TOKEN is given.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Node name, version, uptime, connections, sessions, subscriptions, routes, retained.
    Status,
    /// Cluster membership: status, join, leave, force-leave.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Node evacuation: empty this node of clients and sessions (start, stop, status).
    #[command(subcommand)]
    Evacuation(evacuation::EvacuationCmd),
    /// Cluster load rebalancing: move clients and sessions from busy nodes to idle ones.
    #[command(subcommand)]
    Rebalance(rebalance::RebalanceCmd),
    /// Clients (sessions, online and offline).
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// Subscriptions in the route table.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCmd),
    /// Routes: topic filters with subscribers, per node.
    #[command(subcommand)]
    Routes(RoutesCmd),
    /// Retained messages.
    #[command(subcommand)]
    Retained(RetainedCmd),
    /// Bridges: state, queues, counters; pause, resume, restart.
    #[command(subcommand)]
    Bridges(BridgesCmd),
    /// The live supervision tree with restart counts and last failures.
    Tree,
    /// Restart the actor (or subtree) at PATH, e.g. broker/router, listeners/tcp:default.
    Restart {
        #[arg(value_name = "PATH")]
        path: String,
    },
    /// Print the Prometheus metrics (no token needed).
    Metrics,
    /// Log filter of the running node.
    #[command(subcommand)]
    Log(LogCmd),
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClientsCmd {
    /// List clients of every node of the cluster (or of one, --node
    /// NAME), optionally those whose id contains PATTERN.
    List {
        #[arg(long = "match", value_name = "PATTERN")]
        pattern: Option<String>,
        /// Only the clients on this member (its node name).
        #[arg(long = "node", value_name = "NAME")]
        node: Option<String>,
    },
    /// One client's session: state, subscriptions, queues.
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Disconnect a client (MQTT 5: DISCONNECT 0x98, administrative action).
    Kick {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum SubscriptionsCmd {
    /// List subscriptions, optionally of one client.
    List {
        #[arg(long, value_name = "ID")]
        client: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum RoutesCmd {
    /// List routes.
    List,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RetainedCmd {
    /// List retained messages.
    List,
    /// One retained message, payload included.
    Show {
        #[arg(value_name = "TOPIC")]
        topic: String,
    },
    /// Delete the retained message of TOPIC.
    Delete {
        #[arg(value_name = "TOPIC")]
        topic: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum BridgesCmd {
    /// List bridges: state, queued messages, inflight, sent, dropped.
    List,
    /// One bridge: figures and configuration (no password).
    Show {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Restart the bridge's actor (reconnects; unacknowledged messages are resent in durable mode).
    Restart {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Stop sending to the remote; messages keep queueing in the bridge's buffer.
    Pause {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Send again, in order, what queued while paused.
    Resume {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum LogCmd {
    /// Show the log filter, or set it (e.g. debug, "info,roost_actors=trace").
    Level {
        #[arg(value_name = "LEVEL")]
        level: Option<String>,
    },
}

/// Only plain `http://` URLs: the API has no TLS of its own.
fn parse_node_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").ok_or_else(|| {
        "expected http://HOST:PORT (the management API speaks plain HTTP; reach a remote node through an SSH tunnel)"
            .to_owned()
    })?;
    if rest.trim_end_matches('/').is_empty() {
        return Err("missing host after http://".to_owned());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// Runs one command; the text to print on stdout, or what failed.
pub fn run(args: &CtlArgs) -> Result<String, CtlError> {
    let client = match (&args.command, resolve_token(args)) {
        // Unauthenticated endpoint: a token is sent if there is one.
        (CtlCommand::Metrics, token) => Client::new(&args.node, token.ok()),
        (_, token) => Client::new(&args.node, Some(token?)),
    };
    let out = Out { json: args.json };
    match &args.command {
        CtlCommand::Status => out.show(client.get("/api/v1/status")?, render::status),
        CtlCommand::Cluster(cmd) => cluster::run(&client, &out, cmd),
        CtlCommand::Evacuation(cmd) => evacuation::run(&client, &out, cmd),
        CtlCommand::Rebalance(cmd) => rebalance::run(&client, &out, cmd),
        CtlCommand::Clients(cmd) => clients(&client, &out, cmd),
        CtlCommand::Subscriptions(SubscriptionsCmd::List { client: id }) => {
            let path = match id {
                Some(id) => format!("/api/v1/subscriptions?client={}", encode(id)),
                None => "/api/v1/subscriptions".to_owned(),
            };
            out.show(client.get(&path)?, |l: &List<SubscriptionEntry>| {
                render::subscriptions(&l.data)
            })
        }
        CtlCommand::Routes(RoutesCmd::List) => out
            .show(client.get("/api/v1/routes")?, |l: &List<RouteEntry>| {
                render::routes(&l.data)
            }),
        CtlCommand::Retained(cmd) => retained(&client, &out, cmd),
        CtlCommand::Bridges(cmd) => bridges(&client, &out, cmd),
        CtlCommand::Tree => out.show(client.get("/api/v1/tree")?, |t: &TreeEntry| render::tree(t)),
        CtlCommand::Restart { path } => restart(&client, &out, path),
        CtlCommand::Log(LogCmd::Level { level }) => log_level(&client, &out, level.as_deref()),
        CtlCommand::Metrics => client.get("/metrics"),
    }
}

fn restart(client: &Client, out: &Out, path: &str) -> Result<String, CtlError> {
    let body = serde_json::json!({ "path": path });
    out.show(
        client.send_json(false, "/api/v1/restart", &body)?,
        |r: &Restarted| match r.restored {
            Some(true) => format!(
                "{}: session restarted from the store (its client was disconnected)\n",
                r.path
            ),
            Some(false) => format!(
                "{}: clean session stopped (its client was disconnected)\n",
                r.path
            ),
            None => format!(
                "restart of {} scheduled (watch it with `roost ctl tree`)\n",
                r.path
            ),
        },
    )
}

fn bridges(client: &Client, out: &Out, cmd: &BridgesCmd) -> Result<String, CtlError> {
    let one = |name: &str, action: &str| {
        let path = format!("/api/v1/bridges/{}/{action}", encode(name));
        client.send_json(false, &path, &serde_json::json!({}))
    };
    match cmd {
        BridgesCmd::List => out.show(client.get("/api/v1/bridges")?, |l: &List<BridgeSummary>| {
            render::bridges(&l.data)
        }),
        BridgesCmd::Show { name } => out.show(
            client.get(&format!("/api/v1/bridges/{}", encode(name)))?,
            |b: &BridgeDetail| render::bridge(b),
        ),
        BridgesCmd::Restart { name } => restart(client, out, &format!("bridges/{name}")),
        BridgesCmd::Pause { name } => out.show(one(name, "pause")?, |b: &BridgeSummary| {
            format!(
                "paused {} (messages keep queueing: {} queued)\n",
                b.name,
                queued(b)
            )
        }),
        BridgesCmd::Resume { name } => out.show(one(name, "resume")?, |b: &BridgeSummary| {
            format!(
                "resumed {} ({} queued, state {})\n",
                b.name,
                queued(b),
                b.state
            )
        }),
    }
}

fn queued(b: &BridgeSummary) -> u64 {
    b.queued.memory_messages + b.queued.disk_messages
}

fn clients(client: &Client, out: &Out, cmd: &ClientsCmd) -> Result<String, CtlError> {
    match cmd {
        ClientsCmd::List { pattern, node } => {
            let mut params = Vec::new();
            if let Some(p) = pattern {
                params.push(format!("match={}", encode(p)));
            }
            if let Some(n) = node {
                params.push(format!("node={}", encode(n)));
            }
            let path = if params.is_empty() {
                "/api/v1/clients".to_owned()
            } else {
                format!("/api/v1/clients?{}", params.join("&"))
            };
            out.show(client.get(&path)?, |l: &List<ClientSummary>| {
                render::clients(&l.data)
            })
        }
        ClientsCmd::Show { id } => out.show(
            client.get(&format!("/api/v1/clients/{}", encode(id)))?,
            render::client,
        ),
        ClientsCmd::Kick { id } => out.show(
            client.delete(&format!("/api/v1/clients/{}", encode(id)))?,
            |k: &Kicked| format!("kicked {}\n", k.client_id),
        ),
    }
}

fn retained(client: &Client, out: &Out, cmd: &RetainedCmd) -> Result<String, CtlError> {
    match cmd {
        RetainedCmd::List => out.show(
            client.get("/api/v1/retained")?,
            |l: &List<RetainedSummary>| render::retained(&l.data),
        ),
        RetainedCmd::Show { topic } => out.show(
            client.get(&format!("/api/v1/retained/{}", encode(topic)))?,
            |m: &RetainedMessage| render::retained_message(m),
        ),
        RetainedCmd::Delete { topic } => out.show(
            client.delete(&format!("/api/v1/retained/{}", encode(topic)))?,
            |d: &Deleted| format!("deleted the retained message on {}\n", d.topic),
        ),
    }
}

fn log_level(client: &Client, out: &Out, level: Option<&str>) -> Result<String, CtlError> {
    let body = match level {
        Some(level) => {
            let body = serde_json::json!({ "level": level });
            client.send_json(true, "/api/v1/log/level", &body)?
        }
        None => client.get("/api/v1/log/level")?,
    };
    out.show(body, |l: &LogLevel| format!("log level: {}\n", l.level))
}

/// `--token`/`ROOST_TOKEN` (clap reads both), else the data directory's file.
fn resolve_token(args: &CtlArgs) -> Result<String, CtlError> {
    if let Some(t) = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Ok(t.to_owned());
    }
    token::read(&args.data_dir).map_err(|e| {
        CtlError(format!(
            "no management token: pass --token, set ROOST_TOKEN, or --data-dir DIR of the node ({e:#})"
        ))
    })
}

/// JSON passthrough or a rendering of the typed answer.
struct Out {
    json: bool,
}

impl Out {
    fn show<T: DeserializeOwned>(
        &self,
        body: String,
        render: impl FnOnce(&T) -> String,
    ) -> Result<String, CtlError> {
        let invalid =
            |e: serde_json::Error| CtlError(format!("unexpected answer from the node: {e}"));
        if self.json {
            let value: serde_json::Value = serde_json::from_str(&body).map_err(invalid)?;
            let pretty = serde_json::to_string_pretty(&value).map_err(invalid)?;
            return Ok(pretty + "\n");
        }
        let value: T = serde_json::from_str(&body).map_err(invalid)?;
        Ok(render(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_must_be_plain_http() {
        assert_eq!(
            parse_node_url("http://127.0.0.1:18083/"),
            Ok("http://127.0.0.1:18083".into())
        );
        assert!(parse_node_url("https://host:18083").is_err());
        assert!(parse_node_url("127.0.0.1:18083").is_err());
        assert!(parse_node_url("http://").is_err());
    }

    #[test]
    fn json_mode_pretty_prints_and_table_mode_renders() {
        let body = r#"{"data":[{"client_id":"c1","connected":true,"subscriptions":2,"inflight":0,"queued":1}]}"#;
        let json = Out { json: true }
            .show(body.to_owned(), |_: &List<ClientSummary>| String::new())
            .expect("json");
        assert!(json.contains("\"client_id\": \"c1\""), "{json}");
        let text = Out { json: false }
            .show(body.to_owned(), |l: &List<ClientSummary>| {
                render::clients(&l.data)
            })
            .expect("table");
        assert!(
            text.lines().nth(1).is_some_and(|l| l.starts_with("c1 ")),
            "{text}"
        );
    }
}
