//! The supervisor actor: a thin shell that feeds ractor's events and our
//! messages to [`SupervisorState`] and runs the steps it hands out.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::time::Instant;
use tracing::{error, warn};

use super::client::assemble_tree;
use super::state::{Decision, Exit, Step, StopItem, SupervisorState};
use super::{
    ChildSpec, Internal, StartCtx, StartFn, StartReply, Supervisor, SupervisorArgs,
    SupervisorError, SupervisorMsg, TreeNode, KILL_WAIT,
};

/// How long a supervisor waits for a child supervisor's subtree when its own
/// caller set no timeout.
const NESTED_TREE_TIMEOUT: Duration = Duration::from_secs(1);

/// Reports of the background steps.
pub(super) enum InternalMsg {
    StopsDone,
    StartDone {
        key: u64,
        token: u64,
        result: Result<ActorCell, SpawnErr>,
    },
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(start_static_children(myself.get_cell(), args).await?)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        shutdown_children(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartChild(spec, reply) => start_child(state, spec, reply),
            SupervisorMsg::TerminateChild(name, reply) => terminate_child(state, &name, reply),
            SupervisorMsg::RestartChild(name, reply) => {
                let _ = reply.send(state.request_restart(&name));
            }
            SupervisorMsg::Tree(reply) => send_tree(state, reply),
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(state.which_children());
            }
            SupervisorMsg::Internal(Internal(InternalMsg::StopsDone)) => state.stops_done(),
            SupervisorMsg::Internal(Internal(InternalMsg::StartDone { key, token, result })) => {
                let decision = state.start_done(key, token, result, SystemTime::now());
                apply(state, decision).await?;
            }
        }
        drive(&myself, state);
        Ok(())
    }

    /// Replaces ractor's default, which stops the supervisor on any exit.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Exit::Abnormal(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, Exit::terminated(reason)),
            _ => return Ok(()),
        };
        let decision = state.on_exit(cell.get_id(), exit, SystemTime::now());
        apply(state, decision).await?;
        drive(&myself, state);
        Ok(())
    }
}

/// Starts the static children in order; on a failure stops those already
/// started (reverse order) and names the child that failed.
async fn start_static_children(
    myself: ActorCell,
    args: SupervisorArgs,
) -> Result<SupervisorState, SupervisorError> {
    let SupervisorArgs {
        path,
        strategy,
        intensity,
        children,
    } = args;
    let mut state = SupervisorState::new(myself, path, strategy, intensity);
    for spec in children {
        if let Err(err) = state.check_name(&spec.name) {
            shutdown_children(&mut state).await;
            return Err(err);
        }
        let key = state.add(spec, None);
        let Some((start, ctx)) = state.start_request(key) else {
            continue;
        };
        let path = ctx.path.clone();
        match run_start(start, ctx).await {
            Ok(cell) => state.started(key, cell),
            Err(source) => {
                warn!(path = %path, reason = %source, "child_start_failed");
                shutdown_children(&mut state).await;
                return Err(SupervisorError::Spawn { path, source });
            }
        }
    }
    Ok(state)
}

/// Counts a restart against the intensity; over it, stops every child and
/// returns the error that fails (and so escalates) this supervisor.
async fn apply(state: &mut SupervisorState, decision: Decision) -> Result<(), SupervisorError> {
    let restart = match decision {
        Decision::Nothing => return Ok(()),
        Decision::Restart(key) => Some(key),
        Decision::Retry => None,
    };
    if !state.allow_restart(Instant::now()) {
        error!(path = %state.path(), "supervisor_intensity_exceeded");
        shutdown_children(state).await;
        return Err(state.intensity_error());
    }
    if let Some(key) = restart {
        state.plan_restart(key);
    }
    Ok(())
}

fn start_child(state: &mut SupervisorState, spec: ChildSpec, reply: StartReply) {
    match state.check_name(&spec.name) {
        Ok(()) => {
            let key = state.add(spec, Some(reply));
            state.queue_start(key);
        }
        Err(err) => {
            let _ = reply.send(Err(err));
        }
    }
}

/// Stops outside the mailbox loop, so a child whose `post_stop` calls us
/// cannot block the supervisor; replies once the child is gone.
fn terminate_child(
    state: &mut SupervisorState,
    name: &str,
    reply: RpcReplyPort<Result<(), SupervisorError>>,
) {
    match state.terminate(name) {
        Ok(Some(item)) => {
            tokio::spawn(async move {
                stop_child(item).await;
                let _ = reply.send(Ok(()));
            });
        }
        Ok(None) => {
            let _ = reply.send(Ok(()));
        }
        Err(err) => {
            let _ = reply.send(Err(err));
        }
    }
}

/// Answers from a background task: child supervisors are asked with a share
/// of our caller's timeout, and one that does not answer stays a leaf.
fn send_tree(state: &SupervisorState, reply: RpcReplyPort<TreeNode>) {
    let budget = reply
        .get_timeout()
        .map_or(NESTED_TREE_TIMEOUT, |timeout| timeout.mul_f64(0.75));
    let snapshot = state.tree_snapshot();
    tokio::spawn(async move {
        let _ = reply.send(assemble_tree(snapshot, budget).await);
    });
}

/// Launches the next step, if none is in flight.
fn drive(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    let Some(step) = state.next_step() else {
        return;
    };
    let myself = myself.clone();
    match step {
        Step::Stops(items) => {
            tokio::spawn(async move {
                for item in items {
                    stop_child(item).await;
                }
                let _ = myself.cast(SupervisorMsg::Internal(Internal(InternalMsg::StopsDone)));
            });
        }
        Step::Start {
            key,
            token,
            start,
            ctx,
        } => {
            tokio::spawn(async move {
                let result = run_start(start, ctx).await;
                let started = result.as_ref().ok().cloned();
                let done = InternalMsg::StartDone { key, token, result };
                if myself
                    .cast(SupervisorMsg::Internal(Internal(done)))
                    .is_err()
                {
                    // We are gone; do not leave an orphan behind.
                    if let Some(cell) = started {
                        cell.kill();
                    }
                }
            });
        }
    }
}

/// Runs a start function, turning a panic into a start failure.
async fn run_start(start: StartFn, ctx: StartCtx) -> Result<ActorCell, SpawnErr> {
    match AssertUnwindSafe(async move { start(ctx).await })
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "start function panicked".to_owned());
            Err(SpawnErr::StartupFailed(reason.into()))
        }
    }
}

/// Stops every child, reverse start order, one after the other.
async fn shutdown_children(state: &mut SupervisorState) {
    for item in state.drain_for_shutdown() {
        stop_child(item).await;
    }
}

/// Graceful stop with reason `"shutdown"`; killed after `shutdown`.
async fn stop_child(item: StopItem) {
    let StopItem {
        cell,
        shutdown,
        path,
    } = item;
    match cell
        .stop_and_wait(Some("shutdown".to_owned()), Some(shutdown))
        .await
    {
        Ok(()) => {}
        Err(RactorErr::Timeout) => {
            warn!(path = %path, ?shutdown, "child_shutdown_timeout");
            if cell.kill_and_wait(Some(KILL_WAIT)).await.is_err() {
                warn!(path = %path, "child_kill_timeout");
            }
        }
        // Already exiting: its stop port is closed; wait for the end.
        Err(_) => {
            let _ = cell.wait(Some(shutdown)).await;
        }
    }
}
