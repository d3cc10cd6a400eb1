//! Dynamic children, the live tree and restarts by path.

use super::worker::{worker, worker_spec, Log, Probe, WorkerMsg, WorkerOpts};
use super::*;
use crate::supervisor::{child_spec_supervisor, restart_path, tree, Restart};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_start_and_terminate_of_1000_temporary_children() {
    bounded(async {
        let root = spawn_root(args("sessions", Strategy::OneForOne, vec![])).await;
        let probe = Probe::default();
        let spec = |i: usize| {
            worker_spec(
                &format!("s{i}"),
                Restart::Temporary,
                &probe,
                WorkerOpts::default(),
            )
        };
        for i in 0..1000 {
            start_child(&root, spec(i)).await.expect("child starts");
        }
        assert_eq!(children(&root).await.len(), 1000);
        assert_eq!(probe.starts(), 1000);
        assert!(matches!(
            start_child(&root, spec(7)).await,
            Err(SupervisorError::DuplicateName(path)) if path == "sessions/s7"
        ));

        for i in 0..500 {
            terminate_child(&root, &format!("s{i}"))
                .await
                .expect("known child");
        }
        assert_eq!(children(&root).await.len(), 500);
        assert!(matches!(
            terminate_child(&root, "s0").await,
            Err(SupervisorError::UnknownPath(path)) if path == "sessions/s0"
        ));

        // The rest exit on their own: normally, or by failing; none restarts.
        for (i, info) in children(&root).await.into_iter().enumerate() {
            let worker: ActorRef<WorkerMsg> = ActorRef::from(info.cell.expect("running"));
            let message = if i % 2 == 0 {
                WorkerMsg::Stop(None)
            } else {
                WorkerMsg::Panic
            };
            worker.cast(message).expect("worker alive");
        }
        eventually!("all removed", children(&root).await.is_empty());
        assert_eq!(probe.starts(), 1000);
        assert_eq!(tree(&root).await.expect("tree").child_restarts, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_child_reports_a_failing_start_and_an_invalid_name() {
    bounded(async {
        let root = spawn_root(args("", Strategy::OneForOne, vec![])).await;
        let broken = ChildSpec::new("broken", |_ctx| {
            Box::pin(async { Err(ractor::SpawnErr::StartupFailed("refused".into())) })
        });
        assert!(matches!(
            start_child(&root, broken).await,
            Err(SupervisorError::Spawn { path, .. }) if path == "broken"
        ));
        assert!(children(&root).await.is_empty());
        let (bad, _) = worker("a/b", Restart::Temporary, &Log::default());
        assert!(matches!(
            start_child(&root, bad).await,
            Err(SupervisorError::InvalidName(_))
        ));
    })
    .await;
}

/// root (one_for_one): a, inner (one_for_one): x, y
async fn nested_tree(log: &Log) -> (ActorRef<SupervisorMsg>, Probe, Probe) {
    let (a, pa) = worker("a", Restart::Permanent, log);
    let (x, px) = worker("x", Restart::Permanent, log);
    let (y, _) = worker("y", Restart::Permanent, log);
    let inner_args = args("ignored", Strategy::OneForOne, vec![x, y]);
    let inner = child_spec_supervisor("inner", inner_args, Restart::Permanent);
    let root = spawn_root(args("", Strategy::OneForOne, vec![a, inner])).await;
    (root, pa, px)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_reports_restart_counts_and_nested_supervisors() {
    bounded(async {
        let (root, pa, px) = nested_tree(&Log::default()).await;
        let inner = running_supervisor(&root, "inner").await;
        tell(&inner, "x", WorkerMsg::Panic).await;
        eventually!("x restarted", px.starts() == 2);
        tell(&root, "a", WorkerMsg::Fail).await;
        eventually!("a restarted", pa.starts() == 2);
        eventually!(
            "a running",
            status(&root, "a").await == Some(ChildStatus::Running)
        );

        let tree = tree(&root).await.expect("tree");
        assert_eq!(
            (tree.path.as_str(), tree.kind, tree.child_restarts),
            ("", "supervisor", 1)
        );
        let names: Vec<&str> = tree.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "inner"]);
        let a = tree.find("a").expect("a");
        assert_eq!(
            (a.kind, a.restarts, a.status.as_str()),
            ("worker", 1, "running")
        );
        assert!(a
            .last_failure
            .as_ref()
            .is_some_and(|(r, _)| r.contains("told to fail")));
        let inner = tree.find("inner").expect("inner");
        assert_eq!(
            (inner.kind, inner.restarts, inner.child_restarts),
            ("supervisor", 0, 1)
        );
        let x = tree.find("inner/x").expect("x");
        assert_eq!((x.path.as_str(), x.restarts), ("inner/x", 1));
        assert!(x
            .last_failure
            .as_ref()
            .is_some_and(|(r, _)| r.contains("panic")));
        assert_eq!(tree.find("inner/y").map(|y| y.restarts), Some(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_path_restarts_a_nested_child_and_refuses_root_and_unknown_paths() {
    bounded(async {
        let (root, pa, px) = nested_tree(&Log::default()).await;

        restart_path(&root, "inner/x").await.expect("nested restart");
        eventually!("x restarted", px.starts() == 2);
        assert_eq!(pa.starts(), 1);
        restart_path(&root, "/inner/").await.expect("subtree restart");
        eventually!("inner restarted with x", px.starts() == 3);
        eventually!("inner back", status(&root, "inner").await == Some(ChildStatus::Running));
        let tree = tree(&root).await.expect("tree");
        assert_eq!(tree.find("inner").map(|n| n.restarts), Some(1));
        assert_eq!(tree.find("inner/x").map(|n| n.restarts), Some(0));

        for refused in ["", "/"] {
            assert!(matches!(restart_path(&root, refused).await, Err(SupervisorError::RefusedRoot)));
        }
        for unknown in ["nope", "inner/nope", "nope/x", "a/x"] {
            assert!(
                matches!(restart_path(&root, unknown).await, Err(SupervisorError::UnknownPath(p)) if p == unknown),
                "{unknown}"
            );
        }
    })
    .await;
}

/// Looks like a supervisor (its message type) but never answers `Tree`.
struct Mute;

impl ractor::Actor for Mute {
    type Msg = SupervisorMsg;
    type State = Vec<ractor::RpcReplyPort<crate::supervisor::TreeNode>>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        _args: (),
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        held: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let SupervisorMsg::Tree(reply) = message {
            held.push(reply);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_supervisor_that_does_not_answer_is_reported_as_a_leaf() {
    bounded(async {
        let (a, _) = worker("a", Restart::Permanent, &Log::default());
        let mute = ChildSpec::for_actor("mute", || (Mute, ()));
        let root = spawn_root(args("", Strategy::OneForOne, vec![mute, a])).await;

        let asked = tokio::time::Instant::now();
        let tree = crate::supervisor::tree_within(&root, Duration::from_millis(400))
            .await
            .expect("the root answers without the mute child");
        assert!(asked.elapsed() < Duration::from_millis(400));
        let mute = tree.find("mute").expect("mute listed");
        assert_eq!((mute.kind, mute.children.len()), ("supervisor", 0));
        assert!(tree.find("a").is_some());
    })
    .await;
}
