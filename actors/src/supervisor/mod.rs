//! OTP-style supervisors on top of ractor's linking and supervision events.
//!
//! A [`Supervisor`] owns an ordered list of children described by
//! [`ChildSpec`]s. It starts them in order in its `pre_start`, watches them
//! through ractor's supervision events, restarts them according to its
//! [`Strategy`] and each child's [`Restart`] policy, and gives up (stops its
//! children in reverse start order and fails itself, so that its own parent
//! sees `ActorFailed`) when more than [`Intensity::max_restarts`] restarts
//! happen within [`Intensity::period`].
//!
//! # OTP semantics kept
//!
//! * `one_for_one` restarts the failed child; `one_for_all` stops every other
//!   child in reverse start order and restarts all of them in start order;
//!   `rest_for_one` does the same for the children started after the failed one.
//! * `permanent` children are always restarted, `transient` ones only after an
//!   abnormal exit (a failure, or a stop reason other than none, `"normal"` or
//!   `"shutdown"`), `temporary` ones never; a temporary child that exits, or
//!   that a sibling's restart stops, is removed from the child list.
//! * A child is stopped gracefully (ractor stop with reason `"shutdown"`) and
//!   killed if it has not exited within its [`ChildSpec::shutdown`].
//! * Restart intensity counts every restart decision in a sliding window; going
//!   over it escalates. A failing restart attempt counts too and is retried.
//! * Every child has a stable path (`listeners/tcp:default`) used by
//!   [`tree`] and [`restart_path`]; we never use ractor's global name
//!   registry, because several broker nodes share one process in tests.
//!
//! # What ractor gives and what we add
//!
//! ractor 0.16 only *notifies* a parent (`ActorStarted`, `ActorFailed`,
//! `ActorTerminated`); its default handler stops the parent on any child exit,
//! so [`Supervisor`] overrides it. A child is linked only after its own
//! `pre_start` succeeded, so a child that fails there is reported through its
//! start future's `Err`, never through an event. `post_stop` does not run after
//! a panic or a kill, and an actor that exits (even by failing) kills all its
//! remaining linked children without ordering: we stop ours in reverse order
//! before we fail or finish `post_stop`. Supervision events are delivered
//! before ordinary messages, which the bookkeeping below takes into account.
//!
//! # Where we differ from OTP
//!
//! * Restarts and dynamic starts run in a background task, one step at a time
//!   (all pending stops, then one start), and report back by message. The
//!   supervisor keeps answering while a child starts, so a child's start may
//!   call its supervisor; only the initial start of the static children, in
//!   `pre_start`, must not (as in OTP's `init/1`).
//! * [`SupervisorMsg::TerminateChild`] also deletes the child (OTP's
//!   `terminate_child` + `delete_child`).
//! * [`SupervisorMsg::RestartChild`] works on a running child: it is stopped
//!   and restarted per the strategy. Operator restarts are counted in the
//!   restart counters but not in the intensity window, and the reply comes
//!   once the restart is scheduled, not finished.
//! * Mailboxes are unbounded (ractor); a supervisor's mailbox only sees
//!   control traffic, so this is acceptable here.
//!
//! This module does not touch global config, storage or sockets: the
//! children's start closures capture whatever they need.

mod actor;
mod client;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorCell, RpcReplyPort, SpawnErr};

pub use client::{restart_path, restart_path_within, tree, tree_within, DEFAULT_CALL_TIMEOUT};
pub use state::SupervisorState;

/// How long a worker gets to stop gracefully before it is killed (OTP: 5000).
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Shutdown timeout of a nested supervisor: long, since it stops its own
/// children one after the other first (OTP uses `infinity`).
pub const SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(30);
/// How long to wait for a killed child to be gone before moving on.
pub const KILL_WAIT: Duration = Duration::from_secs(1);

/// Which siblings are restarted with a child that must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child itself.
    OneForOne,
    /// Every child: the others are stopped (reverse order), all restart in order.
    OneForAll,
    /// The child and the children started after it.
    RestForOne,
}

/// When a child that exited is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit.
    Transient,
    /// Never; the child is removed from the list when it exits.
    Temporary,
}

/// Maximum restart frequency before the supervisor gives up and escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `period`; one more escalates.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Self {
        Self {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// The future a [`ChildSpec`] start function returns.
pub type StartFuture = futures::future::BoxFuture<'static, Result<ActorCell, SpawnErr>>;
/// A child's start function, shared by every (re)start of that child.
pub type StartFn = Arc<dyn Fn(StartCtx) -> StartFuture + Send + Sync>;

/// What a start function gets: where to link the child and its path.
#[derive(Debug, Clone)]
pub struct StartCtx {
    /// The supervisor: spawn with `Actor::spawn_linked(None, actor, args, ctx.supervisor)`.
    pub supervisor: ActorCell,
    /// The child's full path, e.g. `listeners/tcp:default`.
    pub path: String,
}

/// How to start and restart one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Path segment, unique among siblings, e.g. `tcp:default`; no `/`.
    pub name: String,
    /// When to restart it after it exits.
    pub restart: Restart,
    /// Graceful stop timeout before the child is killed.
    pub shutdown: Duration,
    /// Spawns the child linked to `ctx.supervisor` (no global name).
    pub start: StartFn,
}

impl ChildSpec {
    /// A permanent child with [`DEFAULT_SHUTDOWN`].
    pub fn new<F>(name: impl Into<String>, start: F) -> Self
    where
        F: Fn(StartCtx) -> StartFuture + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            restart: Restart::Permanent,
            shutdown: DEFAULT_SHUTDOWN,
            start: Arc::new(start),
        }
    }

    /// A permanent child running actor `A`; `make` builds a fresh actor and
    /// its arguments for every (re)start.
    pub fn for_actor<A, F>(name: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        Self::new(name, move |ctx: StartCtx| {
            let (actor, args) = make();
            Box::pin(async move {
                let (actor_ref, _join) = A::spawn_linked(None, actor, args, ctx.supervisor).await?;
                Ok(actor_ref.get_cell())
            })
        })
    }

    /// Sets the restart policy.
    pub fn with_restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the graceful shutdown timeout.
    pub fn with_shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// A supervisor's arguments.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// `""` for the root, else the supervisor's own path, e.g. `broker`.
    pub path: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Static children, started in this order.
    pub children: Vec<ChildSpec>,
}

/// Reply port of [`SupervisorMsg::StartChild`].
pub type StartReply = RpcReplyPort<Result<ActorCell, SupervisorError>>;

/// A supervisor's mailbox.
pub enum SupervisorMsg {
    /// Adds and starts a dynamic child (appended to the start order);
    /// replies once it runs. A duplicate name is an error.
    StartChild(ChildSpec, StartReply),
    /// Stops the named child (graceful, then kill) and deletes it; replies
    /// once it is gone.
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Stops the named child and restarts it per the strategy (a temporary
    /// child is only stopped); replies once the restart is scheduled.
    RestartChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// The live subtree, asking child supervisors in turn.
    Tree(RpcReplyPort<TreeNode>),
    /// The current children, in start order.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// The supervisor's own bookkeeping; cannot be built outside this module.
    #[doc(hidden)]
    Internal(Internal),
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for SupervisorMsg {}

/// Messages a supervisor sends itself from its background steps.
#[doc(hidden)]
pub struct Internal(actor::InternalMsg);

/// Whether a child is a [`Supervisor`] (seen from its message type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// Runs [`Supervisor`].
    Supervisor,
    /// Anything else.
    Worker,
}

impl ChildKind {
    /// `"supervisor"` or `"worker"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Supervisor => "supervisor",
            Self::Worker => "worker",
        }
    }

    fn of(cell: &ActorCell) -> Self {
        if cell.is_message_type_of::<SupervisorMsg>() == Some(true) {
            Self::Supervisor
        } else {
            Self::Worker
        }
    }
}

/// Where a child is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// Added, first start not finished yet.
    Starting,
    /// Running.
    Running,
    /// Being restarted (waiting for its turn, or starting).
    Restarting,
    /// Exited and not restarted (transient child after a normal exit).
    Stopped,
}

impl ChildStatus {
    /// `"starting"`, `"running"`, `"restarting"` or `"stopped"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for ChildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One child as [`SupervisorMsg::WhichChildren`] reports it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Path segment.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Supervisor or worker (worker until first started).
    pub kind: ChildKind,
    /// Restart policy.
    pub restart: Restart,
    /// Life-cycle status.
    pub status: ChildStatus,
    /// Times this child was restarted.
    pub restarts: u64,
    /// The running instance, if any.
    pub cell: Option<ActorCell>,
}

/// A node of the live supervision tree (`roost ctl tree`).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    /// Full path (`""` for the root).
    pub path: String,
    /// Last path segment (`""` for the root).
    pub name: String,
    /// `"supervisor"` or `"worker"`.
    pub kind: &'static str,
    /// `"running"`, `"restarting"`, `"starting"` or `"stopped"`.
    pub status: String,
    /// Times the parent restarted this node (0 for the node asked).
    pub restarts: u64,
    /// Last abnormal exit seen by the parent: reason and time.
    pub last_failure: Option<(String, SystemTime)>,
    /// For a supervisor: total child restarts it performed (also of children
    /// since deleted); 0 for a worker.
    pub child_restarts: u64,
    /// Children in start order (empty for a worker, or for a supervisor
    /// that did not answer in time).
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The node at `path` relative to this one (`""` is this node).
    pub fn find(&self, path: &str) -> Option<&TreeNode> {
        path.split('/')
            .filter(|segment| !segment.is_empty())
            .try_fold(self, |node, segment| {
                node.children.iter().find(|child| child.name == segment)
            })
    }
}

/// The supervisor actor; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// Produces the arguments of a nested supervisor at each (re)start.
pub trait SupervisorArgsSource: Send + Sync + 'static {
    /// Fresh arguments; `path` is overwritten with the child's path.
    fn args(&self) -> SupervisorArgs;
}

impl SupervisorArgsSource for SupervisorArgs {
    fn args(&self) -> SupervisorArgs {
        self.clone()
    }
}

impl<F> SupervisorArgsSource for F
where
    F: Fn() -> SupervisorArgs + Send + Sync + 'static,
{
    fn args(&self) -> SupervisorArgs {
        self()
    }
}

/// A child spec running a nested [`Supervisor`], with [`SUPERVISOR_SHUTDOWN`].
pub fn child_spec_supervisor(
    name: impl Into<String>,
    args: impl SupervisorArgsSource,
    restart: Restart,
) -> ChildSpec {
    ChildSpec::new(name, move |ctx: StartCtx| {
        let mut args = args.args();
        args.path = ctx.path;
        Box::pin(async move {
            let (actor_ref, _join) =
                Supervisor::spawn_linked(None, Supervisor, args, ctx.supervisor).await?;
            Ok(actor_ref.get_cell())
        })
    })
    .with_restart(restart)
    .with_shutdown(SUPERVISOR_SHUTDOWN)
}

/// Errors of the supervisor and of its client functions.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No child at this path.
    #[error("no child at path {0:?}")]
    UnknownPath(String),
    /// A child name is empty or contains `/`.
    #[error("invalid child name {0:?}: a name is a non-empty path segment without '/'")]
    InvalidName(String),
    /// A sibling already has this name.
    #[error("a child at path {0:?} already exists")]
    DuplicateName(String),
    /// A child's start function failed.
    #[error("child {path:?} failed to start")]
    Spawn {
        /// The child's path.
        path: String,
        /// ractor's error.
        #[source]
        source: SpawnErr,
    },
    /// The root cannot be restarted from inside the tree.
    #[error("refusing to restart the root supervisor")]
    RefusedRoot,
    /// A supervisor did not answer in time.
    #[error("the supervisor did not answer in time")]
    Timeout,
    /// A supervisor on the way is not running (stopped, or restarting).
    #[error("supervisor {0:?} is not running")]
    Unreachable(String),
    /// Too many restarts: the supervisor gave up.
    #[error("supervisor {path:?} exceeded its restart intensity ({max_restarts} restarts in {period:?})")]
    IntensityExceeded {
        /// The supervisor's path.
        path: String,
        /// Its configured maximum.
        max_restarts: u32,
        /// Its configured window.
        period: Duration,
    },
    /// The child was terminated (or removed by a sibling's restart) before
    /// its first start finished.
    #[error("child {0:?} was removed before it finished starting")]
    Cancelled(String),
}
