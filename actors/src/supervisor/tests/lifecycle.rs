//! Start, stop, kill and escalation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorStatus};

use super::worker::{worker, worker_spec, Log, Probe, Worker, WorkerArgs, WorkerMsg, WorkerOpts};
use super::*;
use crate::supervisor::{child_spec_supervisor, tree, Restart, StartCtx};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_stops_children_and_escalates_to_the_parent() {
    bounded(async {
        let log = Log::default();
        let (w, pw) = worker("w", Restart::Permanent, &log);
        let (w2, pw2) = worker("w2", Restart::Permanent, &log);
        let inner = move || SupervisorArgs {
            intensity: Intensity {
                max_restarts: 1,
                period: Duration::from_secs(5),
            },
            ..args("ignored", Strategy::OneForOne, vec![w.clone(), w2.clone()])
        };
        let inner_spec = child_spec_supervisor("inner", inner, Restart::Permanent);
        let root = spawn_root(args("", Strategy::OneForOne, vec![inner_spec])).await;

        let first = running_supervisor(&root, "inner").await;
        tell(&first, "w", WorkerMsg::Fail).await;
        eventually!("w restarted once", pw.starts() == 2);
        tell(&first, "w", WorkerMsg::Fail).await;

        // inner gives up: stops w2, fails; root restarts inner and its children.
        eventually!("inner restarted", pw.starts() == 3 && pw2.starts() == 2);
        eventually!(
            "first inner gone",
            first.get_status() == ActorStatus::Stopped
        );
        assert!(log.entries().contains(&"stop:w2".to_owned()));
        let tree = tree(&root).await.expect("tree");
        let inner = tree.find("inner").expect("inner in tree");
        assert_eq!(inner.restarts, 1);
        let (reason, _) = inner.last_failure.clone().expect("failure recorded");
        assert!(reason.contains("intensity"), "reason: {reason}");
        assert_eq!(root.get_status(), ActorStatus::Running);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_static_child_start_fails_the_supervisor_start_naming_the_child() {
    bounded(async {
        let log = Log::default();
        let (a, _) = worker("a", Restart::Permanent, &log);
        let broken = ChildSpec::new("broken", |_ctx: StartCtx| {
            Box::pin(async { Err(ractor::SpawnErr::StartupFailed("no port".into())) })
        });
        let (never, pn) = worker("never", Restart::Permanent, &log);
        let result = Actor::spawn(
            None,
            Supervisor,
            args("listeners", Strategy::OneForOne, vec![a, broken, never]),
        )
        .await;

        let err = result.expect_err("start fails");
        let chain = format!("{err} / {:?}", std::error::Error::source(&err));
        assert!(chain.contains("listeners/broken"), "error: {chain}");
        assert_eq!(pn.starts(), 0);
        // a was started, then stopped again.
        assert_eq!(log.entries(), ["start:a", "stop:a"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_supervisor_stops_children_in_reverse_start_order() {
    bounded(async {
        let log = Log::default();
        let (a, _) = worker("a", Restart::Permanent, &log);
        let (b, _) = worker("b", Restart::Permanent, &log);
        let (c, _) = worker("c", Restart::Permanent, &log);
        let root = spawn_root(args("", Strategy::OneForOne, vec![a, b, c])).await;

        root.stop_and_wait(None, Some(CALL))
            .await
            .expect("root stops");
        assert_eq!(
            log.entries(),
            ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_that_does_not_stop_in_time_is_killed_and_restarted() {
    bounded(async {
        let probe = Probe::default();
        let slow = WorkerOpts {
            stop_delay: Duration::from_secs(60),
            ..WorkerOpts::default()
        };
        let spec = worker_spec("slow", Restart::Permanent, &probe, slow)
            .with_shutdown(Duration::from_millis(50));
        let root = spawn_root(args("", Strategy::OneForOne, vec![spec])).await;
        let first = running_worker(&root, "slow").await;

        restart_child(&root, "slow").await.expect("known child");
        eventually!("slow restarted", probe.starts() == 2);
        assert_eq!(first.get_status(), ActorStatus::Stopped);
        // Killed: its post_stop never finished.
        assert!(probe.log.entries().iter().all(|e| !e.starts_with("stop:")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_does_not_deadlock_when_the_start_calls_the_supervisor() {
    bounded(async {
        let probe = Probe::default();
        let asked = Arc::new(AtomicBool::new(false));
        let (start_probe, start_asked) = (probe.clone(), asked.clone());
        let spec = ChildSpec::new("caller", move |ctx: StartCtx| {
            let (probe, asked) = (start_probe.clone(), start_asked.clone());
            let inner = worker_spec("caller", Restart::Permanent, &probe, WorkerOpts::default());
            Box::pin(async move {
                // Not on the first start: the supervisor is still in pre_start.
                if probe.starts() > 0 {
                    let sup: ActorRef<SupervisorMsg> = ActorRef::from(ctx.supervisor.clone());
                    let answer = sup.call(SupervisorMsg::WhichChildren, Some(CALL)).await;
                    let answered = matches!(answer, Ok(CallResult::Success(_)));
                    asked.store(answered, Ordering::SeqCst);
                }
                (inner.start)(ctx).await
            })
        });
        let root = spawn_root(args("", Strategy::OneForOne, vec![spec])).await;

        tell(&root, "caller", WorkerMsg::Panic).await;
        eventually!("caller restarted", probe.starts() == 2);
        assert!(
            asked.load(Ordering::SeqCst),
            "the supervisor answered during the restart"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_failing_right_after_its_restart_is_restarted_again() {
    bounded(async {
        let probe = Probe::default();
        let opts = WorkerOpts {
            fail_post_start_on: Some(2),
            ..WorkerOpts::default()
        };
        let spec = worker_spec("flaky", Restart::Permanent, &probe, opts);
        let root = spawn_root(args("", Strategy::OneForOne, vec![spec])).await;

        tell(&root, "flaky", WorkerMsg::Stop(Some("crash".into()))).await;
        eventually!("flaky back", probe.starts() == 3);
        eventually!(
            "flaky running",
            status(&root, "flaky").await == Some(ChildStatus::Running)
        );
        let info = child(&root, "flaky").await.expect("listed");
        assert_eq!(info.restarts, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_restart_is_retried_until_the_intensity_is_exceeded() {
    bounded(async {
        let probe = Probe::default();
        let start_probe = probe.clone();
        let spec = ChildSpec::new("once", move |ctx: StartCtx| {
            let probe = start_probe.clone();
            Box::pin(async move {
                if probe.starts() > 0 {
                    probe.starts.fetch_add(1, Ordering::SeqCst);
                    return Err(ractor::SpawnErr::StartupFailed("cannot start again".into()));
                }
                let args = WorkerArgs::new("once", &probe);
                let (actor, _) = Worker::spawn_linked(None, Worker, args, ctx.supervisor).await?;
                Ok(actor.get_cell())
            })
        });
        let mut args = args("", Strategy::OneForOne, vec![spec]);
        args.intensity.max_restarts = 3;
        let (root, join) = Actor::spawn(None, Supervisor, args).await.expect("starts");

        tell(&root, "once", WorkerMsg::Fail).await;
        join.await.expect("supervisor task ends");
        assert_eq!(root.get_status(), ActorStatus::Stopped);
        // 1 start, then 3 failing attempts are allowed; the next one is over.
        assert_eq!(probe.starts(), 4);
    })
    .await;
}
