//! Node evacuation (DESIGN.md §6): empty a node of its clients and
//! sessions before it is taken down, without losing a queued message.
//!
//! `roost ctl evacuation start` on the node to empty. In order:
//! 1. `waiting_health_check`: `/health/ready` answers 503, so load balancers
//!    take the node out of their pool; new connections are still served
//!    for `wait_health_check` (they would have nowhere else to go yet).
//! 2. `evicting_connections`: new connections are refused (CONNACK 0x9C,
//!    use another server; 3.1.1: 3, server unavailable) and the connected
//!    clients are disconnected at `conn_evict_rate` per second (5.0:
//!    DISCONNECT 0x9C). Both carry the MQTT 5 Server Reference
//!    `redirect_to` when one is given. A client that reconnects to another
//!    node takes its session there (the usual takeover).
//! 3. `waiting_takeover`: up to `wait_takeover` for them to do so.
//! 4. `evicting_sessions`: the sessions left (their clients did not come
//!    back) are moved to the up nodes of `migrate_to` (every up peer when
//!    empty), round robin, at `sess_evict_rate` per second, with their
//!    subscriptions and queued and inflight messages
//!    ([`takeover::move_session`]: kept here until the peer confirms).
//!    With no target node up, it waits for one.
//! 5. `done`: nothing left; the node keeps refusing connections (and its
//!    readiness stays 503) until `roost ctl evacuation stop`. A session that
//!    comes back (a move the peer never confirmed) is moved again.
//!
//! The evacuation is stored (cluster record [`EVACUATION_KEY`]): a node
//! restarted meanwhile refuses connections from its first accept and
//! carries on from step 2. The `evacuation` actor owns the driving task;
//! a restart of the actor carries on the same way.
//!
//! The same actor runs a node's part of a rebalance ([`Job::Rebalance`],
//! ordered by the coordinating node, see [`crate::rebalance`]): the same
//! steps, down to a number of connected clients and of sessions instead of
//! none, moving only offline sessions; then the node serves again. That
//! part is not stored: a restart ends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use roost_actors::broker::{blocking, unix_ms, Counters};
use roost_actors::overload::Evacuation as Door;
use roost_actors::registry::RegistryMsg;
use roost_actors::session::SessionMsg;
use roost_protocol::packet::reason;
use roost_protocol::ClientId;
use roost_storage::Batch;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::shared::ClusterShared;
use crate::takeover::{self, SessionMove};

/// The cluster record of a running evacuation.
pub const EVACUATION_KEY: &str = "evacuation";

/// EMQX's defaults.
pub const DEFAULT_WAIT_HEALTH_CHECK: u64 = 60;
pub const DEFAULT_WAIT_TAKEOVER: u64 = 60;
pub const DEFAULT_EVICT_RATE: u32 = 500;

/// How an evacuation runs (`roost ctl evacuation start` options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationParams {
    /// Seconds between readiness turning 503 and the first refusal.
    pub wait_health_check_secs: u64,
    /// Server Reference given to 5.0 clients (`host:port`, several
    /// joined by spaces); none when empty.
    pub redirect_to: Vec<String>,
    /// Connections disconnected per second.
    pub conn_evict_rate: u32,
    /// Nodes the remaining sessions move to; every up peer when empty.
    pub migrate_to: Vec<String>,
    /// Seconds to wait for evicted clients to take their sessions.
    pub wait_takeover_secs: u64,
    /// Sessions moved per second.
    pub sess_evict_rate: u32,
}

impl Default for EvacuationParams {
    fn default() -> Self {
        EvacuationParams {
            wait_health_check_secs: DEFAULT_WAIT_HEALTH_CHECK,
            redirect_to: Vec::new(),
            conn_evict_rate: DEFAULT_EVICT_RATE,
            migrate_to: Vec::new(),
            wait_takeover_secs: DEFAULT_WAIT_TAKEOVER,
            sess_evict_rate: DEFAULT_EVICT_RATE,
        }
    }
}

impl EvacuationParams {
    /// What is wrong with them, said to the operator. `me`: this node;
    /// `members`: the nodes it knows.
    pub fn validate(&self, me: &str, members: &[String]) -> Result<(), String> {
        if self.conn_evict_rate == 0 || self.sess_evict_rate == 0 {
            return Err("conn_evict_rate and sess_evict_rate must be at least 1 per second".into());
        }
        for r in &self.redirect_to {
            if crate::settings::parse_host_port(r).is_none() || r.contains(char::is_whitespace) {
                return Err(format!(
                    "redirect_to: expected host:port (an MQTT listener of another node), got {r:?}"
                ));
            }
        }
        for n in &self.migrate_to {
            if n == me {
                return Err(format!(
                    "migrate_to: {n} is the node being evacuated; name other members"
                ));
            }
            if !members.iter().any(|m| m == n) {
                return Err(format!(
                    "migrate_to: {n} is not a member of this cluster (members: {})",
                    members.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn server_reference(&self) -> Option<String> {
        (!self.redirect_to.is_empty()).then(|| self.redirect_to.join(" "))
    }
}

/// What a run of the evacuation actor is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// Empty the node; stored, refusing until stopped.
    Evacuation,
    /// This node's part of a rebalance coordinated by `coordinator`: down
    /// to `connections` connected clients and `sessions` sessions.
    Rebalance {
        coordinator: String,
        connections: u64,
        sessions: u64,
    },
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Evacuation => "evacuation",
            Job::Rebalance { .. } => "rebalance",
        }
    }

    /// (connected clients, sessions) to get down to.
    fn targets(&self) -> (u64, u64) {
        match self {
            Job::Evacuation => (0, 0),
            Job::Rebalance {
                connections,
                sessions,
                ..
            } => (*connections, *sessions),
        }
    }
}

/// What is stored while an evacuation runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEvacuation {
    params: EvacuationParams,
    started_ms: u64,
}

/// Where an evacuation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Off,
    WaitingHealthCheck,
    EvictingConnections,
    WaitingTakeover,
    EvictingSessions,
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Off => "off",
            Stage::WaitingHealthCheck => "waiting_health_check",
            Stage::EvictingConnections => "evicting_connections",
            Stage::WaitingTakeover => "waiting_takeover",
            Stage::EvictingSessions => "evicting_sessions",
            Stage::Done => "done",
        }
    }
}

/// `roost ctl evacuation status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvacuationStatus {
    pub node: String,
    /// `evacuation`, `rebalance` (this node's part of one), or empty (off).
    pub job: String,
    /// A rebalance part: the node that coordinates it.
    pub coordinator: String,
    /// Connected clients and sessions it gets down to (0 for an evacuation).
    pub connections_target: u64,
    pub sessions_target: u64,
    pub stage: Stage,
    /// None when off.
    pub params: Option<EvacuationParams>,
    /// When it was started, ms since the Unix epoch (0: off).
    pub started_ms: u64,
    /// Clients disconnected by this evacuation (since it started here or
    /// the node restarted).
    pub connections_evicted: u64,
    /// Sessions moved to other nodes (same).
    pub sessions_migrated: u64,
    /// Connected clients at the last count.
    pub connections_left: u64,
    /// Sessions (connected or not) at the last count.
    pub sessions_left: u64,
    /// Why it is not progressing, when it is not (e.g. no target up).
    pub note: String,
}

/// The driving task's progress, read by status.
#[derive(Debug, Default)]
pub struct Progress {
    job: Option<Job>,
    stage: Option<Stage>,
    params: Option<EvacuationParams>,
    started_ms: u64,
    connections_evicted: u64,
    sessions_migrated: u64,
    connections_left: u64,
    sessions_left: u64,
    note: String,
}

impl Progress {
    fn status(&self, node: &str) -> EvacuationStatus {
        let (connections_target, sessions_target) = self.job.as_ref().map_or((0, 0), Job::targets);
        EvacuationStatus {
            node: node.to_owned(),
            job: self.job.as_ref().map_or("", Job::name).to_owned(),
            coordinator: match &self.job {
                Some(Job::Rebalance { coordinator, .. }) => coordinator.clone(),
                _ => String::new(),
            },
            connections_target,
            sessions_target,
            stage: self.stage.unwrap_or(Stage::Off),
            params: self.params.clone(),
            started_ms: self.started_ms,
            connections_evicted: self.connections_evicted,
            sessions_migrated: self.sessions_migrated,
            connections_left: self.connections_left,
            sessions_left: self.sessions_left,
            note: self.note.clone(),
        }
    }
}

pub enum EvacuationMsg {
    Start(
        EvacuationParams,
        RpcReplyPort<Result<EvacuationStatus, String>>,
    ),
    Stop(RpcReplyPort<Result<EvacuationStatus, String>>),
    Status(RpcReplyPort<EvacuationStatus>),
    /// This node's part of a rebalance (see [`Job::Rebalance`]).
    StartPart(
        Job,
        EvacuationParams,
        RpcReplyPort<Result<EvacuationStatus, String>>,
    ),
    /// Stop the rebalance part ordered by this coordinator, if one runs
    /// (an evacuation is left alone).
    StopPart(String, RpcReplyPort<Result<EvacuationStatus, String>>),
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for EvacuationMsg {}

/// The `evacuation` actor: owns the task that drives a running evacuation.
pub struct Evacuator;

pub struct EvacuatorArgs {
    pub shared: Arc<ClusterShared>,
}

pub struct EvacuatorState {
    shared: Arc<ClusterShared>,
    task: Option<JoinHandle<()>>,
}

impl EvacuatorState {
    fn status(&self) -> EvacuationStatus {
        self.shared
            .evacuation
            .lock()
            .status(&self.shared.settings.node_name)
    }

    fn store(&self, record: Option<&StoredEvacuation>) -> Result<(), String> {
        let Some(storage) = &self.shared.storage else {
            return Ok(());
        };
        let mut b = Batch::new();
        match record {
            Some(r) => b.put_cluster(EVACUATION_KEY, r),
            None => b.delete_cluster(EVACUATION_KEY),
        };
        blocking(|| storage.commit(b))
            .map(|_| ())
            .map_err(|e| format!("cannot store the evacuation: {e}"))
    }

    fn load(&self) -> Option<StoredEvacuation> {
        let storage = self.shared.storage.as_ref()?;
        match blocking(|| storage.load_cluster::<StoredEvacuation>(EVACUATION_KEY)) {
            Ok(records) => records
                .into_iter()
                .find(|(k, _)| k == EVACUATION_KEY)
                .map(|(_, r)| r),
            Err(e) => {
                // Served as not evacuating: the operator sees it in the log
                // and can start it again.
                warn!(error = %e, "evacuation_record_unreadable");
                None
            }
        }
    }

    fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn begin(&mut self, job: Job, record: StoredEvacuation, resumed: bool) {
        {
            let mut p = self.shared.evacuation.lock();
            *p = Progress {
                job: Some(job.clone()),
                stage: Some(if resumed || record.params.wait_health_check_secs == 0 {
                    Stage::EvictingConnections
                } else {
                    Stage::WaitingHealthCheck
                }),
                params: Some(record.params.clone()),
                started_ms: record.started_ms,
                ..Progress::default()
            };
        }
        let door = if resumed || record.params.wait_health_check_secs == 0 {
            Door::Refusing
        } else {
            Door::Draining
        };
        self.shared
            .ctx
            .overload
            .set_evacuation(door, record.params.server_reference());
        let shared = self.shared.clone();
        self.task = Some(tokio::spawn(run(shared, job, record.params, resumed)));
    }

    /// Why another run cannot start now.
    fn busy(&self) -> Option<String> {
        if !self.running() {
            return None;
        }
        let s = self.status();
        Some(match s.job.as_str() {
            "rebalance" => format!(
                "this node is taking part in a rebalance coordinated by {} ({}); stop it there first",
                s.coordinator,
                s.stage.as_str()
            ),
            _ => format!(
                "an evacuation of this node is already running ({}); stop it first",
                s.stage.as_str()
            ),
        })
    }

    fn end(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Actor for Evacuator {
    type Msg = EvacuationMsg;
    type State = EvacuatorState;
    type Arguments = EvacuatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EvacuatorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        *args.shared.evacuator.write() = Some(myself);
        let mut st = EvacuatorState {
            shared: args.shared,
            task: None,
        };
        if let Some(record) = st.load() {
            info!(started_ms = record.started_ms, "evacuation_resumed");
            st.begin(Job::Evacuation, record, true);
        }
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The door stays as it is: a restarted actor carries on from the
        // store, and a stopping node refuses anyway.
        st.end();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EvacuationMsg::Status(reply) => {
                let _ = reply.send(st.status());
            }
            EvacuationMsg::Start(params, reply) => {
                if let Some(busy) = st.busy() {
                    let _ = reply.send(Err(busy));
                    return Ok(());
                }
                let record = StoredEvacuation {
                    params,
                    started_ms: unix_ms(),
                };
                if let Err(e) = st.store(Some(&record)) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                info!(params = ?record.params, "evacuation_started");
                st.begin(Job::Evacuation, record, false);
                let _ = reply.send(Ok(st.status()));
            }
            EvacuationMsg::StartPart(job, params, reply) => {
                if let Some(busy) = st.busy() {
                    let _ = reply.send(Err(busy));
                    return Ok(());
                }
                info!(?job, params = ?params, "rebalance_part_started");
                let record = StoredEvacuation {
                    params,
                    started_ms: unix_ms(),
                };
                st.begin(job, record, false);
                let _ = reply.send(Ok(st.status()));
            }
            EvacuationMsg::StopPart(coordinator, reply) => {
                let mine = matches!(
                    &st.shared.evacuation.lock().job,
                    Some(Job::Rebalance { coordinator: c, .. }) if *c == coordinator
                );
                if !mine {
                    let _ = reply.send(Err(format!(
                        "no rebalance part ordered by {coordinator} runs here"
                    )));
                    return Ok(());
                }
                st.end();
                st.shared.ctx.overload.set_evacuation(Door::Off, None);
                let status = st.status();
                info!(
                    connections_evicted = status.connections_evicted,
                    sessions_migrated = status.sessions_migrated,
                    "rebalance_part_stopped"
                );
                *st.shared.evacuation.lock() = Progress::default();
                let _ = reply.send(Ok(status));
            }
            EvacuationMsg::Stop(reply) => {
                // Whether or not its task still runs: a stop must always
                // be able to end a stored evacuation.
                let evacuating = st.shared.evacuation.lock().job == Some(Job::Evacuation);
                if !evacuating {
                    let _ = reply.send(Err("no evacuation of this node is running".into()));
                    return Ok(());
                }
                // Stopped only once the record is gone: a restart would
                // evacuate again.
                if let Err(e) = st.store(None) {
                    warn!(error = %e, "evacuation_stop_not_stored");
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                st.end();
                st.shared.ctx.overload.set_evacuation(Door::Off, None);
                let status = {
                    let mut p = st.shared.evacuation.lock();
                    let s = p.status(&st.shared.settings.node_name);
                    *p = Progress::default();
                    s
                };
                info!(
                    connections_evicted = status.connections_evicted,
                    sessions_migrated = status.sessions_migrated,
                    "evacuation_stopped"
                );
                let _ = reply.send(Ok(status));
            }
        }
        Ok(())
    }
}

/// Pace: the n-th item of a run waits until `start + n / rate`.
struct Pacer {
    start: tokio::time::Instant,
    per_item: Duration,
    n: u32,
}

impl Pacer {
    fn new(rate: u32) -> Pacer {
        Pacer {
            start: tokio::time::Instant::now(),
            per_item: Duration::from_secs(1) / rate.max(1),
            n: 0,
        }
    }

    /// When the next item may go.
    fn next_at(&mut self) -> tokio::time::Instant {
        let at = self.start + self.per_item * self.n;
        self.n = self.n.saturating_add(1);
        at
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next_at()).await;
    }
}

/// How often the lists are read again while waiting.
const POLL: Duration = Duration::from_millis(250);
/// A kicked client still listed as connected after this is kicked again.
const KICK_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// While done, how often it looks for sessions that came back.
const DONE_POLL: Duration = Duration::from_secs(2);

fn set(shared: &ClusterShared, f: impl FnOnce(&mut Progress)) {
    f(&mut shared.evacuation.lock());
}

/// (connected clients, all sessions) of this node, or why not.
async fn sessions(shared: &ClusterShared) -> Result<(Vec<ClientId>, Vec<ClientId>), String> {
    let infos = roost_actors::registry::session_infos(&shared.ctx).await?;
    let connected = infos
        .iter()
        .filter(|i| i.connected)
        .map(|i| i.client_id.clone())
        .collect();
    let all = infos.into_iter().map(|i| i.client_id).collect();
    Ok((connected, all))
}

/// Count the sessions left; `None` (and a note) if the registry does not
/// answer.
async fn count(shared: &ClusterShared) -> Option<(Vec<ClientId>, Vec<ClientId>)> {
    match sessions(shared).await {
        Ok((connected, all)) => {
            set(shared, |p| {
                p.connections_left = connected.len() as u64;
                p.sessions_left = all.len() as u64;
                p.note.clear();
            });
            Some((connected, all))
        }
        Err(e) => {
            set(shared, |p| {
                p.note = format!("cannot list the sessions: {e}")
            });
            None
        }
    }
}

/// The number of sessions here (the registry's count: one message, where
/// listing them asks every session), noted as what is left; `None` if the
/// registry does not answer.
async fn session_count(shared: &ClusterShared) -> Option<u64> {
    let registry = shared.ctx.registry()?;
    let n = ractor::call_t!(registry, RegistryMsg::Count, 2_000).ok()? as u64;
    set(shared, |p| p.sessions_left = n);
    Some(n)
}

async fn run(shared: Arc<ClusterShared>, job: Job, params: EvacuationParams, resumed: bool) {
    let reference = params.server_reference();
    let (conn_target, sess_target) = job.targets();
    if !resumed && params.wait_health_check_secs > 0 {
        info!(
            job = job.name(),
            secs = params.wait_health_check_secs,
            "evacuation_waiting_health_check"
        );
        tokio::time::sleep(Duration::from_secs(params.wait_health_check_secs)).await;
    }
    shared
        .ctx
        .overload
        .set_evacuation(Door::Refusing, reference.clone());
    set(&shared, |p| p.stage = Some(Stage::EvictingConnections));
    info!(job = job.name(), server_reference = ?reference, "evacuation_refusing_connections");
    evict_connections(&shared, params.conn_evict_rate, conn_target).await;

    set(&shared, |p| p.stage = Some(Stage::WaitingTakeover));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(params.wait_takeover_secs);
    while tokio::time::Instant::now() < deadline {
        if session_count(&shared)
            .await
            .is_some_and(|n| n <= sess_target)
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if job != Job::Evacuation {
        // A rebalance part moves only offline sessions: the clients still
        // connected here are the ones it keeps.
        set(&shared, |p| p.stage = Some(Stage::EvictingSessions));
        evict_sessions(&shared, &params, sess_target, true).await;
        shared.ctx.overload.set_evacuation(Door::Off, None);
        set(&shared, |p| p.stage = Some(Stage::Done));
        info!(job = job.name(), "rebalance_part_done");
        return;
    }
    loop {
        set(&shared, |p| p.stage = Some(Stage::EvictingSessions));
        evict_sessions(&shared, &params, 0, false).await;
        set(&shared, |p| p.stage = Some(Stage::Done));
        info!("evacuation_done");
        // Done until stopped; a session that comes back (a move its peer
        // never confirmed is taken back) goes again.
        loop {
            tokio::time::sleep(DONE_POLL).await;
            if session_count(&shared).await.is_some_and(|n| n > 0) {
                break;
            }
        }
    }
}

/// Disconnect connected clients (0x9C), paced, until `target` are left.
async fn evict_connections(shared: &ClusterShared, rate: u32, target: u64) {
    let mut pacer = Pacer::new(rate);
    let mut kicked: HashMap<ClientId, Instant> = HashMap::new();
    loop {
        let Some((connected, _)) = count(shared).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let excess = (connected.len() as u64).saturating_sub(target);
        if excess == 0 {
            return;
        }
        let now = Instant::now();
        kicked.retain(|_, at| now.duration_since(*at) < KICK_AGAIN_AFTER);
        // Kicked ones still listed count against the excess: they are
        // closing.
        let closing = connected.iter().filter(|c| kicked.contains_key(*c)).count() as u64;
        let fresh: Vec<ClientId> = connected
            .into_iter()
            .filter(|c| !kicked.contains_key(c))
            .take(excess.saturating_sub(closing) as usize)
            .collect();
        for client in fresh {
            pacer.wait().await;
            if kick(shared, &client).await {
                Counters::inc(&shared.counters.evacuation_connections_evicted);
                set(shared, |p| p.connections_evicted += 1);
                kicked.insert(client, Instant::now());
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// DISCONNECT 0x9C (with the Server Reference) to `client`'s connection.
async fn kick(shared: &ClusterShared, client: &ClientId) -> bool {
    let Some(registry) = shared.ctx.registry() else {
        return false;
    };
    let found = ractor::call_t!(registry, |r| RegistryMsg::Lookup(client.clone(), r), 2_000);
    match found {
        Ok(Some(session)) => session
            .cast(SessionMsg::Kick(reason::USE_ANOTHER_SERVER))
            .is_ok(),
        _ => false,
    }
}

/// The up nodes sessions may move to.
fn targets(shared: &ClusterShared, migrate_to: &[String]) -> Vec<String> {
    let mut up = shared.up_peer_names();
    if !migrate_to.is_empty() {
        up.retain(|n| migrate_to.contains(n));
    }
    up
}

/// Move sessions to the targets, paced, until `target` are left here;
/// only offline ones with `offline_only` (a rebalance part: it ends when
/// none is left to move).
async fn evict_sessions(
    shared: &Arc<ClusterShared>,
    params: &EvacuationParams,
    target: u64,
    offline_only: bool,
) {
    let mut pacer = Pacer::new(params.sess_evict_rate);
    let mut next = 0usize;
    loop {
        let Some((connected, all)) = count(shared).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let excess = (all.len() as u64).saturating_sub(target);
        let movable: Vec<ClientId> = if offline_only {
            let online: std::collections::HashSet<ClientId> = connected.into_iter().collect();
            all.into_iter().filter(|c| !online.contains(c)).collect()
        } else {
            all
        };
        if excess == 0 || movable.is_empty() {
            return;
        }
        let to = targets(shared, &params.migrate_to);
        if to.is_empty() {
            let why = if params.migrate_to.is_empty() {
                "no other node is up: waiting for one to move the sessions to".to_owned()
            } else {
                format!(
                    "none of {} is up: waiting for one to move the sessions to",
                    params.migrate_to.join(", ")
                )
            };
            set(shared, |p| p.note = why);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        for client in movable.into_iter().take(excess as usize) {
            pacer.wait().await;
            let peer = &to[next % to.len()];
            next = next.wrapping_add(1);
            let why = if offline_only {
                "rebalance"
            } else {
                "evacuation"
            };
            match takeover::move_session(shared, client.as_str(), peer, why).await {
                SessionMove::Sent(_) => {
                    Counters::inc(&shared.counters.evacuation_sessions_migrated);
                    set(shared, |p| {
                        p.sessions_migrated += 1;
                        p.sessions_left = p.sessions_left.saturating_sub(1);
                    });
                }
                SessionMove::NotHere => {}
                // The peer went: read the targets again.
                SessionMove::KeptHere => break,
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<String> {
        vec!["a@h".into(), "b@h".into()]
    }

    #[test]
    fn defaults_are_emqx_defaults_and_valid() {
        let p = EvacuationParams::default();
        assert_eq!(p.conn_evict_rate, 500);
        assert_eq!(p.wait_takeover_secs, 60);
        assert!(p.validate("a@h", &members()).is_ok());
        assert_eq!(p.server_reference(), None);
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        let mut p = EvacuationParams {
            conn_evict_rate: 0,
            ..EvacuationParams::default()
        };
        assert!(p
            .validate("a@h", &members())
            .unwrap_err()
            .contains("at least 1"));
        p.conn_evict_rate = 10;
        p.migrate_to = vec!["a@h".into()];
        assert!(p
            .validate("a@h", &members())
            .unwrap_err()
            .contains("being evacuated"));
        p.migrate_to = vec!["c@h".into()];
        let e = p.validate("a@h", &members()).unwrap_err();
        assert!(e.contains("not a member") && e.contains("b@h"), "{e}");
        p.migrate_to = vec!["b@h".into()];
        p.redirect_to = vec!["nohost".into()];
        assert!(p
            .validate("a@h", &members())
            .unwrap_err()
            .contains("host:port"));
        p.redirect_to = vec!["b.example:1883".into(), "c.example:1883".into()];
        assert!(p.validate("a@h", &members()).is_ok());
        assert_eq!(
            p.server_reference().as_deref(),
            Some("b.example:1883 c.example:1883")
        );
    }

    #[test]
    fn the_pacer_spreads_items_over_the_rate() {
        let mut p = Pacer::new(4);
        let t0 = p.start;
        let at: Vec<Duration> = (0..9).map(|_| p.next_at() - t0).collect();
        // Items at 0, 1/4, ..., 8/4 s.
        assert_eq!(at[1], Duration::from_millis(250));
        assert_eq!(at[8], Duration::from_secs(2));
    }
}
