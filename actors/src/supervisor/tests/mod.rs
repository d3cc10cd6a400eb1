//! Supervisor tests with real ractor actors. Every test is bounded by
//! [`bounded`]; waiting is polling with small sleeps ([`eventually!`]).

mod lifecycle;
mod state;
mod strategies;
mod tree;
mod worker;

use std::future::Future;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

use super::{
    ChildInfo, ChildSpec, ChildStatus, Intensity, Strategy, Supervisor, SupervisorArgs,
    SupervisorError, SupervisorMsg,
};
use worker::WorkerMsg;

const CALL: Duration = Duration::from_secs(2);

/// Polls `$cond` (which may `.await`) every 5 ms for up to 2 s.
macro_rules! eventually {
    ($what:expr, $cond:expr) => {{
        let mut met = false;
        for _ in 0..400 {
            if $cond {
                met = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(met, "timed out waiting for {}", $what);
    }};
}
pub(crate) use eventually;

/// Runs a test body under a 10 s ceiling.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("test took too long");
}

/// Generous enough that only the intensity tests hit it.
fn lenient() -> Intensity {
    Intensity {
        max_restarts: 100,
        period: Duration::from_secs(1),
    }
}

fn args(path: &str, strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorArgs {
    SupervisorArgs {
        path: path.to_owned(),
        strategy,
        intensity: lenient(),
        children,
    }
}

async fn spawn_root(args: SupervisorArgs) -> ActorRef<SupervisorMsg> {
    let (root, _join) = Actor::spawn(None, Supervisor, args)
        .await
        .expect("root supervisor starts");
    root
}

async fn children(supervisor: &ActorRef<SupervisorMsg>) -> Vec<ChildInfo> {
    match supervisor
        .call(SupervisorMsg::WhichChildren, Some(CALL))
        .await
    {
        Ok(CallResult::Success(children)) => children,
        _ => panic!("which_children did not answer"),
    }
}

async fn child(supervisor: &ActorRef<SupervisorMsg>, name: &str) -> Option<ChildInfo> {
    children(supervisor)
        .await
        .into_iter()
        .find(|child| child.name == name)
}

async fn status(supervisor: &ActorRef<SupervisorMsg>, name: &str) -> Option<ChildStatus> {
    child(supervisor, name).await.map(|child| child.status)
}

/// The running instance of a worker child (waits for it to run).
async fn running_worker(supervisor: &ActorRef<SupervisorMsg>, name: &str) -> ActorRef<WorkerMsg> {
    let mut cell = None;
    eventually!(format!("{name} running"), {
        cell = child(supervisor, name).await.and_then(|child| child.cell);
        cell.is_some()
    });
    ActorRef::from(cell.expect("checked above"))
}

/// A running child supervisor.
async fn running_supervisor(
    supervisor: &ActorRef<SupervisorMsg>,
    name: &str,
) -> ActorRef<SupervisorMsg> {
    let mut cell = None;
    eventually!(format!("{name} running"), {
        cell = child(supervisor, name).await.and_then(|child| child.cell);
        cell.is_some()
    });
    ActorRef::from(cell.expect("checked above"))
}

async fn tell(supervisor: &ActorRef<SupervisorMsg>, name: &str, message: WorkerMsg) {
    let worker = running_worker(supervisor, name).await;
    worker.cast(message).expect("worker alive");
}

async fn ping(worker: &ActorRef<WorkerMsg>) -> bool {
    matches!(
        worker.call(WorkerMsg::Ping, Some(CALL)).await,
        Ok(CallResult::Success(()))
    )
}

async fn start_child(
    supervisor: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
) -> Result<ractor::ActorCell, SupervisorError> {
    match supervisor
        .call(|reply| SupervisorMsg::StartChild(spec, reply), Some(CALL))
        .await
    {
        Ok(CallResult::Success(result)) => result,
        _ => panic!("start_child did not answer"),
    }
}

async fn terminate_child(
    supervisor: &ActorRef<SupervisorMsg>,
    name: &str,
) -> Result<(), SupervisorError> {
    let name = name.to_owned();
    match supervisor
        .call(
            |reply| SupervisorMsg::TerminateChild(name, reply),
            Some(CALL),
        )
        .await
    {
        Ok(CallResult::Success(result)) => result,
        _ => panic!("terminate_child did not answer"),
    }
}

async fn restart_child(
    supervisor: &ActorRef<SupervisorMsg>,
    name: &str,
) -> Result<(), SupervisorError> {
    let name = name.to_owned();
    match supervisor
        .call(|reply| SupervisorMsg::RestartChild(name, reply), Some(CALL))
        .await
    {
        Ok(CallResult::Success(result)) => result,
        _ => panic!("restart_child did not answer"),
    }
}
