//! Calls into a running tree: [`tree`] and [`restart_path`] (what
//! `roost ctl tree` and `roost ctl restart PATH` use).

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use super::state::TreeSnapshot;
use super::{ChildKind, SupervisorError, SupervisorMsg, TreeNode};

/// Timeout of [`tree`] and of each call of [`restart_path`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The live tree below `root`, restart counts and last failures included.
pub async fn tree(root: &ActorRef<SupervisorMsg>) -> Result<TreeNode, SupervisorError> {
    tree_within(root, DEFAULT_CALL_TIMEOUT).await
}

/// [`tree`] with a timeout; nested supervisors get a share of it.
pub async fn tree_within(
    root: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<TreeNode, SupervisorError> {
    call(root, SupervisorMsg::Tree, timeout, "").await
}

/// Restarts the child at `path` (e.g. `listeners/tcp:default`) below `root`,
/// walking down by name; see [`SupervisorMsg::RestartChild`]. The root itself
/// (`""` or `"/"`) is refused.
pub async fn restart_path(
    root: &ActorRef<SupervisorMsg>,
    path: &str,
) -> Result<(), SupervisorError> {
    restart_path_within(root, path, DEFAULT_CALL_TIMEOUT).await
}

/// [`restart_path`] with a timeout per call.
pub async fn restart_path_within(
    root: &ActorRef<SupervisorMsg>,
    path: &str,
    timeout: Duration,
) -> Result<(), SupervisorError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some((last, parents)) = segments.split_last() else {
        return Err(SupervisorError::RefusedRoot);
    };
    let mut parent = root.clone();
    let mut walked = String::new();
    for segment in parents {
        let children = call(&parent, SupervisorMsg::WhichChildren, timeout, &walked).await?;
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(segment);
        let child = children
            .into_iter()
            .find(|child| child.name == *segment && child.kind == ChildKind::Supervisor)
            .ok_or_else(|| SupervisorError::UnknownPath(path.to_owned()))?;
        let cell = child
            .cell
            .ok_or_else(|| SupervisorError::Unreachable(walked.clone()))?;
        parent = ActorRef::from(cell);
    }
    let name = (*last).to_owned();
    let restart = |reply| SupervisorMsg::RestartChild(name, reply);
    match call(&parent, restart, timeout, &walked).await? {
        Err(SupervisorError::UnknownPath(_)) => Err(SupervisorError::UnknownPath(path.to_owned())),
        other => other,
    }
}

async fn call<T: Send + 'static>(
    supervisor: &ActorRef<SupervisorMsg>,
    build: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    timeout: Duration,
    path: &str,
) -> Result<T, SupervisorError> {
    match supervisor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(reply)) => Ok(reply),
        Ok(CallResult::Timeout) => Err(SupervisorError::Timeout),
        Ok(CallResult::SenderError) | Err(_) => Err(SupervisorError::Unreachable(path.to_owned())),
    }
}

/// Completes a snapshot by asking the running child supervisors, all at
/// once, for their subtrees; the parent's view of each child (status,
/// restarts, last failure) wins over the child's view of itself.
pub(super) async fn assemble_tree(snapshot: TreeSnapshot, budget: Duration) -> TreeNode {
    let TreeSnapshot { mut node, children } = snapshot;
    let subtrees = children.into_iter().map(|(mut leaf, nested)| async move {
        let Some(nested) = nested else {
            return leaf;
        };
        if let Ok(subtree) = call(&nested, SupervisorMsg::Tree, budget, &leaf.path).await {
            leaf.children = subtree.children;
            leaf.child_restarts = subtree.child_restarts;
        }
        leaf
    });
    node.children = futures::future::join_all(subtrees).await;
    node
}
