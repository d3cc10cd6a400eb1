//! A supervisor's bookkeeping: the ordered child table, restart planning and
//! the intensity window. Nothing here awaits or spawns: the actor
//! (`actor.rs`) executes the stop and start [`Step`]s handed out here and
//! reports their outcome back.
//!
//! Invariants:
//! * a child is in `by_id` exactly while it is `Running`;
//! * the id of every child we stop on purpose is in `stopping` until its exit
//!   event arrives, so that event neither counts as a failure nor restarts;
//! * at most one step is in flight; queued stops always run before starts,
//!   and starts run in key (= start) order;
//! * events for an unknown id that arrive while a start is in flight are kept
//!   in `early_exits`: supervision events overtake ordinary messages, so a
//!   child that dies at once is reported before its `StartDone`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::mem;
use std::time::{Duration, SystemTime};

use ractor::{ActorCell, ActorId, ActorRef, SpawnErr};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    ChildInfo, ChildKind, ChildSpec, ChildStatus, Intensity, Restart, StartCtx, StartFn,
    StartReply, Strategy, SupervisorError, SupervisorMsg, TreeNode,
};

/// Why a child exited, as far as restart decisions are concerned.
#[derive(Debug)]
pub(super) enum Exit {
    /// Stopped with no reason, `"normal"` or `"shutdown"`.
    Normal(Option<String>),
    /// Failed (error or panic), or stopped with any other reason.
    Abnormal(String),
}

impl Exit {
    /// Classifies the reason of an `ActorTerminated` event.
    pub(super) fn terminated(reason: Option<String>) -> Self {
        match reason {
            Some(reason) if reason != "normal" && reason != "shutdown" => Self::Abnormal(reason),
            reason => Self::Normal(reason),
        }
    }
}

enum ChildState {
    Running(ActorCell),
    /// Waiting in `to_start`.
    Pending,
    /// Its start is in flight; the token tells a stale result from a current one.
    Starting(u64),
    /// Exited and not restarted (a transient child after a normal exit).
    Stopped,
}

struct Child {
    spec: ChildSpec,
    path: String,
    state: ChildState,
    kind: ChildKind,
    /// Whether a start ever succeeded: a failing first start of a dynamic
    /// child is reported to the caller, a failing restart is retried.
    started_once: bool,
    restarts: u64,
    last_failure: Option<(String, SystemTime)>,
    /// The `StartChild` caller, answered after the first start.
    reply: Option<StartReply>,
}

impl Child {
    fn status(&self) -> ChildStatus {
        match self.state {
            ChildState::Running(_) => ChildStatus::Running,
            ChildState::Stopped => ChildStatus::Stopped,
            _ if self.started_once => ChildStatus::Restarting,
            _ => ChildStatus::Starting,
        }
    }

    fn cell(&self) -> Option<&ActorCell> {
        match &self.state {
            ChildState::Running(cell) => Some(cell),
            _ => None,
        }
    }

    fn leaf(&self) -> TreeNode {
        TreeNode {
            path: self.path.clone(),
            name: self.spec.name.clone(),
            kind: self.kind.as_str(),
            status: self.status().as_str().to_owned(),
            restarts: self.restarts,
            last_failure: self.last_failure.clone(),
            child_restarts: 0,
            children: Vec::new(),
        }
    }
}

/// A child to stop: gracefully within `shutdown`, then killed.
pub(super) struct StopItem {
    pub(super) cell: ActorCell,
    pub(super) shutdown: Duration,
    pub(super) path: String,
}

/// Work for the actor to run in the background, then report back.
pub(super) enum Step {
    /// Stop these, one after the other, in this order.
    Stops(Vec<StopItem>),
    /// Run one child's start function.
    Start {
        key: u64,
        token: u64,
        start: StartFn,
        ctx: StartCtx,
    },
}

enum InFlight {
    Stops,
    /// Shutdown and path of the child, to stop a stale result.
    Start {
        shutdown: Duration,
        path: String,
    },
}

/// What the actor must do after an exit or a start result.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Nothing,
    /// Restart this child per the strategy (counts toward the intensity).
    Restart(u64),
    /// A restart attempt failed and is queued again (counts too).
    Retry,
}

/// What [`super::Supervisor`] knows; opaque outside this module.
pub struct SupervisorState {
    myself: ActorCell,
    path: String,
    strategy: Strategy,
    intensity: Intensity,
    /// By key; keys grow with insertion, so this is the start order.
    children: BTreeMap<u64, Child>,
    by_id: HashMap<ActorId, u64>,
    by_name: HashMap<String, u64>,
    next_key: u64,
    next_token: u64,
    /// Times of the restarts within the intensity period.
    restart_window: VecDeque<Instant>,
    child_restarts: u64,
    to_stop: VecDeque<StopItem>,
    to_start: BTreeSet<u64>,
    in_flight: Option<InFlight>,
    stopping: HashSet<ActorId>,
    early_exits: HashMap<ActorId, Exit>,
}

impl SupervisorState {
    pub(super) fn new(
        myself: ActorCell,
        path: String,
        strategy: Strategy,
        intensity: Intensity,
    ) -> Self {
        Self {
            myself,
            path,
            strategy,
            intensity,
            children: BTreeMap::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            next_key: 0,
            next_token: 0,
            restart_window: VecDeque::new(),
            child_restarts: 0,
            to_stop: VecDeque::new(),
            to_start: BTreeSet::new(),
            in_flight: None,
            stopping: HashSet::new(),
            early_exits: HashMap::new(),
        }
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn intensity_error(&self) -> SupervisorError {
        SupervisorError::IntensityExceeded {
            path: self.path.clone(),
            max_restarts: self.intensity.max_restarts,
            period: self.intensity.period,
        }
    }

    fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{}", self.path, name)
        }
    }

    fn key_of(&self, name: &str) -> Result<u64, SupervisorError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| SupervisorError::UnknownPath(self.child_path(name)))
    }

    /// A new child's name must be a non-empty segment, unique among siblings.
    pub(super) fn check_name(&self, name: &str) -> Result<(), SupervisorError> {
        if name.is_empty() || name.contains('/') {
            return Err(SupervisorError::InvalidName(name.to_owned()));
        }
        if self.by_name.contains_key(name) {
            return Err(SupervisorError::DuplicateName(self.child_path(name)));
        }
        Ok(())
    }

    /// Appends a child (not started, not queued) after [`Self::check_name`].
    pub(super) fn add(&mut self, spec: ChildSpec, reply: Option<StartReply>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let path = self.child_path(&spec.name);
        self.by_name.insert(spec.name.clone(), key);
        let child = Child {
            spec,
            path,
            state: ChildState::Pending,
            kind: ChildKind::Worker,
            started_once: false,
            restarts: 0,
            last_failure: None,
            reply,
        };
        self.children.insert(key, child);
        key
    }

    pub(super) fn queue_start(&mut self, key: u64) {
        self.to_start.insert(key);
    }

    /// What an in-line start (the static children, in `pre_start`) needs.
    pub(super) fn start_request(&self, key: u64) -> Option<(StartFn, StartCtx)> {
        let child = self.children.get(&key)?;
        let ctx = StartCtx {
            supervisor: self.myself.clone(),
            path: child.path.clone(),
        };
        Some((child.spec.start.clone(), ctx))
    }

    /// Records a successful (re)start.
    pub(super) fn started(&mut self, key: u64, cell: ActorCell) {
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        if child.started_once {
            child.restarts += 1;
            self.child_restarts += 1;
            info!(path = %child.path, "child_restarted");
        }
        child.started_once = true;
        child.kind = ChildKind::of(&cell);
        self.by_id.insert(cell.get_id(), key);
        if let Some(reply) = child.reply.take() {
            let _ = reply.send(Ok(cell.clone()));
        }
        child.state = ChildState::Running(cell);
    }

    /// A linked actor exited (`ActorFailed` / `ActorTerminated`).
    pub(super) fn on_exit(&mut self, id: ActorId, exit: Exit, at: SystemTime) -> Decision {
        if let Some(key) = self.by_id.remove(&id) {
            return self.child_exited(key, exit, at);
        }
        let starting = matches!(self.in_flight, Some(InFlight::Start { .. }));
        if !self.stopping.remove(&id) && starting {
            self.early_exits.insert(id, exit);
        }
        Decision::Nothing
    }

    fn child_exited(&mut self, key: u64, exit: Exit, at: SystemTime) -> Decision {
        let Some(child) = self.children.get_mut(&key) else {
            return Decision::Nothing;
        };
        child.state = ChildState::Stopped;
        let policy = child.spec.restart;
        let restart = match &exit {
            Exit::Abnormal(reason) => {
                warn!(path = %child.path, reason = %reason, "child_failed");
                child.last_failure = Some((reason.clone(), at));
                policy != Restart::Temporary
            }
            Exit::Normal(reason) => {
                let reason = reason.as_deref().unwrap_or("normal");
                info!(path = %child.path, reason, "child_exited");
                policy == Restart::Permanent
            }
        };
        if restart {
            Decision::Restart(key)
        } else {
            if policy == Restart::Temporary {
                self.remove(key);
            }
            Decision::Nothing
        }
    }

    /// Takes down what the strategy ties to `key` (reverse start order) and
    /// queues the restarts (start order).
    pub(super) fn plan_restart(&mut self, key: u64) {
        let affected: Vec<u64> = match self.strategy {
            Strategy::OneForOne => vec![key],
            Strategy::OneForAll => self.children.keys().copied().collect(),
            Strategy::RestForOne => self.children.range(key..).map(|(k, _)| *k).collect(),
        };
        for key in affected.into_iter().rev() {
            self.take_down(key);
        }
    }

    /// Stops a running child and queues its restart; a temporary child is
    /// removed instead, unless its first start is in flight (left alone).
    fn take_down(&mut self, key: u64) {
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        let temporary = child.spec.restart == Restart::Temporary;
        let stop = match mem::replace(&mut child.state, ChildState::Pending) {
            ChildState::Running(cell) => Some(StopItem {
                cell,
                shutdown: child.spec.shutdown,
                path: child.path.clone(),
            }),
            ChildState::Starting(token) if temporary => {
                child.state = ChildState::Starting(token);
                return;
            }
            _ => None,
        };
        if let Some(item) = stop {
            self.stop_later(item);
            if temporary {
                self.remove(key);
                return;
            }
        }
        self.to_start.insert(key);
    }

    fn stop_later(&mut self, item: StopItem) {
        let id = item.cell.get_id();
        self.by_id.remove(&id);
        self.stopping.insert(id);
        self.to_stop.push_back(item);
    }

    /// Deletes a child; a pending `StartChild` caller gets `Cancelled`.
    fn remove(&mut self, key: u64) -> Option<Child> {
        let mut child = self.children.remove(&key)?;
        self.by_name.remove(&child.spec.name);
        self.to_start.remove(&key);
        if let Some(cell) = child.cell() {
            self.by_id.remove(&cell.get_id());
        }
        if let Some(reply) = child.reply.take() {
            let _ = reply.send(Err(SupervisorError::Cancelled(child.path.clone())));
        }
        Some(child)
    }

    /// Operator restart: see [`super::SupervisorMsg::RestartChild`].
    pub(super) fn request_restart(&mut self, name: &str) -> Result<(), SupervisorError> {
        let key = self.key_of(name)?;
        let Some(child) = self.children.get_mut(&key) else {
            return Err(SupervisorError::UnknownPath(self.child_path(name)));
        };
        info!(path = %child.path, "child_restart_requested");
        let temporary = child.spec.restart == Restart::Temporary;
        match child.state {
            ChildState::Running(_) if temporary => self.take_down(key),
            ChildState::Running(_) => self.plan_restart(key),
            ChildState::Stopped => {
                child.state = ChildState::Pending;
                self.to_start.insert(key);
            }
            // Already on its way back.
            ChildState::Pending | ChildState::Starting(_) => {}
        }
        Ok(())
    }

    /// Deletes the named child; returns what must be stopped, if it runs.
    pub(super) fn terminate(&mut self, name: &str) -> Result<Option<StopItem>, SupervisorError> {
        let key = self.key_of(name)?;
        let Some(child) = self.remove(key) else {
            return Err(SupervisorError::UnknownPath(self.child_path(name)));
        };
        info!(path = %child.path, "child_terminated");
        let ChildState::Running(cell) = child.state else {
            return Ok(None);
        };
        self.stopping.insert(cell.get_id());
        Ok(Some(StopItem {
            cell,
            shutdown: child.spec.shutdown,
            path: child.path,
        }))
    }

    /// Records a restart; `false` when that goes over the intensity.
    pub(super) fn allow_restart(&mut self, now: Instant) -> bool {
        self.restart_window.push_back(now);
        while let Some(first) = self.restart_window.front() {
            if now.saturating_duration_since(*first) > self.intensity.period {
                self.restart_window.pop_front();
            } else {
                break;
            }
        }
        self.restart_window.len() <= self.intensity.max_restarts as usize
    }

    /// The next step to run, unless one is in flight or nothing is left.
    pub(super) fn next_step(&mut self) -> Option<Step> {
        if self.in_flight.is_some() {
            return None;
        }
        if !self.to_stop.is_empty() {
            self.in_flight = Some(InFlight::Stops);
            return Some(Step::Stops(self.to_stop.drain(..).collect()));
        }
        while let Some(key) = self.to_start.pop_first() {
            let Some(child) = self.children.get_mut(&key) else {
                continue;
            };
            let token = self.next_token;
            self.next_token += 1;
            child.state = ChildState::Starting(token);
            self.in_flight = Some(InFlight::Start {
                shutdown: child.spec.shutdown,
                path: child.path.clone(),
            });
            let ctx = StartCtx {
                supervisor: self.myself.clone(),
                path: child.path.clone(),
            };
            let start = child.spec.start.clone();
            return Some(Step::Start {
                key,
                token,
                start,
                ctx,
            });
        }
        None
    }

    pub(super) fn stops_done(&mut self) {
        self.in_flight = None;
    }

    /// The start step of child `key` finished.
    pub(super) fn start_done(
        &mut self,
        key: u64,
        token: u64,
        result: Result<ActorCell, SpawnErr>,
        at: SystemTime,
    ) -> Decision {
        let (shutdown, path) = match self.in_flight.take() {
            Some(InFlight::Start { shutdown, path }) => (shutdown, path),
            _ => (super::DEFAULT_SHUTDOWN, self.path.clone()),
        };
        let mut early = mem::take(&mut self.early_exits);
        let current = self
            .children
            .get(&key)
            .is_some_and(|child| matches!(child.state, ChildState::Starting(t) if t == token));
        match result {
            Ok(cell) if current => {
                let id = cell.get_id();
                self.started(key, cell);
                match early.remove(&id) {
                    Some(exit) => self.on_exit(id, exit, at),
                    None => Decision::Nothing,
                }
            }
            Ok(cell) => {
                // The plan changed while it started (deleted, or re-planned).
                if early.remove(&cell.get_id()).is_none() {
                    self.stop_later(StopItem {
                        cell,
                        shutdown,
                        path,
                    });
                }
                Decision::Nothing
            }
            Err(err) if current => self.start_failed(key, err, at),
            Err(_) => Decision::Nothing,
        }
    }

    fn start_failed(&mut self, key: u64, err: SpawnErr, at: SystemTime) -> Decision {
        let Some(child) = self.children.get_mut(&key) else {
            return Decision::Nothing;
        };
        if child.started_once {
            warn!(path = %child.path, reason = %err, "child_restart_failed");
            child.last_failure = Some((err.to_string(), at));
            child.state = ChildState::Pending;
            self.to_start.insert(key);
            return Decision::Retry;
        }
        warn!(path = %child.path, reason = %err, "child_start_failed");
        let path = child.path.clone();
        let reply = child.reply.take();
        self.remove(key);
        if let Some(reply) = reply {
            let _ = reply.send(Err(SupervisorError::Spawn { path, source: err }));
        }
        Decision::Nothing
    }

    /// Everything that runs or waits to be stopped, running children in
    /// reverse start order first; nothing is restarted afterwards.
    pub(super) fn drain_for_shutdown(&mut self) -> Vec<StopItem> {
        let mut items = Vec::new();
        for child in self.children.values_mut().rev() {
            if let ChildState::Running(cell) = mem::replace(&mut child.state, ChildState::Stopped) {
                self.by_id.remove(&cell.get_id());
                self.stopping.insert(cell.get_id());
                let (shutdown, path) = (child.spec.shutdown, child.path.clone());
                items.push(StopItem {
                    cell,
                    shutdown,
                    path,
                });
            }
        }
        items.extend(self.to_stop.drain(..));
        self.to_start.clear();
        items
    }

    pub(super) fn which_children(&self) -> Vec<ChildInfo> {
        let info = |child: &Child| ChildInfo {
            name: child.spec.name.clone(),
            path: child.path.clone(),
            kind: child.kind,
            restart: child.spec.restart,
            status: child.status(),
            restarts: child.restarts,
            cell: child.cell().cloned(),
        };
        self.children.values().map(info).collect()
    }

    /// This supervisor's node and its children as leaves, each with a handle
    /// to ask if it is a running supervisor.
    pub(super) fn tree_snapshot(&self) -> TreeSnapshot {
        let node = TreeNode {
            path: self.path.clone(),
            name: self.path.rsplit('/').next().unwrap_or_default().to_owned(),
            kind: ChildKind::Supervisor.as_str(),
            status: ChildStatus::Running.as_str().to_owned(),
            restarts: 0,
            last_failure: None,
            child_restarts: self.child_restarts,
            children: Vec::new(),
        };
        let children = self.children.values().map(|child| {
            let nested = child
                .cell()
                .filter(|_| child.kind == ChildKind::Supervisor)
                .map(|cell| ActorRef::<SupervisorMsg>::from(cell.clone()));
            (child.leaf(), nested)
        });
        TreeSnapshot {
            node,
            children: children.collect(),
        }
    }
}

/// See [`SupervisorState::tree_snapshot`].
pub(super) struct TreeSnapshot {
    pub(super) node: TreeNode,
    pub(super) children: Vec<(TreeNode, Option<ActorRef<SupervisorMsg>>)>,
}
