//! Strategies and restart policies.

use ractor::ActorStatus;

use super::worker::{worker, Log, WorkerMsg};
use super::*;
use crate::supervisor::Restart;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    bounded(async {
        let log = Log::default();
        let (a, pa) = worker("a", Restart::Permanent, &log);
        let (b, pb) = worker("b", Restart::Permanent, &log);
        let (c, pc) = worker("c", Restart::Permanent, &log);
        let root = spawn_root(args("", Strategy::OneForOne, vec![a, b, c])).await;

        tell(&root, "b", WorkerMsg::Panic).await;
        eventually!("b restarted", pb.starts() == 2);
        let _ = running_worker(&root, "b").await;
        assert_eq!((pa.starts(), pc.starts()), (1, 1));
        let info = child(&root, "b").await.expect("b listed");
        assert_eq!(info.restarts, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_siblings_in_reverse_then_restarts_all_in_order() {
    bounded(async {
        let log = Log::default();
        let (a, pa) = worker("a", Restart::Permanent, &log);
        let (b, pb) = worker("b", Restart::Permanent, &log);
        let (c, pc) = worker("c", Restart::Permanent, &log);
        let root = spawn_root(args("", Strategy::OneForAll, vec![a, b, c])).await;

        tell(&root, "b", WorkerMsg::Fail).await;
        eventually!("all restarted", log.len() == 8);
        assert_eq!((pa.starts(), pb.starts(), pc.starts()), (2, 2, 2));
        // b failed (no post_stop); c and a are stopped in reverse start order.
        assert_eq!(
            log.entries()[3..],
            ["stop:c", "stop:a", "start:a", "start:b", "start:c"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_later_siblings_only() {
    bounded(async {
        let log = Log::default();
        let (a, pa) = worker("a", Restart::Permanent, &log);
        let (b, pb) = worker("b", Restart::Permanent, &log);
        let (c, pc) = worker("c", Restart::Permanent, &log);
        let (d, pd) = worker("d", Restart::Permanent, &log);
        let root = spawn_root(args("", Strategy::RestForOne, vec![a, b, c, d])).await;

        tell(&root, "b", WorkerMsg::Panic).await;
        eventually!("b, c, d restarted", log.len() == 9);
        assert_eq!(pa.starts(), 1);
        assert_eq!((pb.starts(), pc.starts(), pd.starts()), (2, 2, 2));
        assert_eq!(
            log.entries()[4..],
            ["stop:d", "stop:c", "start:b", "start:c", "start:d"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_child_is_restarted_even_after_a_normal_stop() {
    bounded(async {
        let log = Log::default();
        let (p, probe) = worker("p", Restart::Permanent, &log);
        let root = spawn_root(args("", Strategy::OneForOne, vec![p])).await;

        tell(&root, "p", WorkerMsg::Stop(None)).await;
        eventually!("p restarted", probe.starts() == 2);
        eventually!(
            "p running",
            status(&root, "p").await == Some(ChildStatus::Running)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_child_is_restarted_only_after_an_abnormal_exit() {
    bounded(async {
        let log = Log::default();
        let (t, probe) = worker("t", Restart::Transient, &log);
        let root = spawn_root(args("", Strategy::OneForOne, vec![t])).await;

        tell(&root, "t", WorkerMsg::Stop(Some("shutdown".into()))).await;
        eventually!(
            "t stopped",
            status(&root, "t").await == Some(ChildStatus::Stopped)
        );
        assert_eq!(probe.starts(), 1);

        // The operator brings it back; then an abnormal stop reason restarts it.
        restart_child(&root, "t").await.expect("known child");
        eventually!("t back", probe.starts() == 2);
        tell(&root, "t", WorkerMsg::Stop(Some("lost_connection".into()))).await;
        eventually!("t restarted", probe.starts() == 3);
        tell(&root, "t", WorkerMsg::Fail).await;
        eventually!("t restarted after failure", probe.starts() == 4);
        let info = child(&root, "t").await.expect("t listed");
        assert_eq!(info.restarts, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_child_is_never_restarted_and_is_removed() {
    bounded(async {
        let log = Log::default();
        let (keep, _) = worker("keep", Restart::Permanent, &log);
        let (t1, p1) = worker("t1", Restart::Temporary, &log);
        let (t2, p2) = worker("t2", Restart::Temporary, &log);
        let root = spawn_root(args("", Strategy::OneForOne, vec![keep, t1, t2])).await;

        tell(&root, "t1", WorkerMsg::Panic).await;
        tell(&root, "t2", WorkerMsg::Stop(None)).await;
        eventually!("temporaries removed", children(&root).await.len() == 1);
        assert_eq!((p1.starts(), p2.starts()), (1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_sibling_stopped_by_one_for_all_is_removed_not_restarted() {
    bounded(async {
        let log = Log::default();
        let (a, pa) = worker("a", Restart::Permanent, &log);
        let (t, pt) = worker("t", Restart::Temporary, &log);
        let root = spawn_root(args("", Strategy::OneForAll, vec![a, t])).await;

        tell(&root, "a", WorkerMsg::Fail).await;
        eventually!("a restarted", pa.starts() == 2);
        eventually!("t removed", child(&root, "t").await.is_none());
        assert_eq!(pt.starts(), 1);
        assert!(log.entries().contains(&"stop:t".to_owned()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_a_child_is_contained() {
    bounded(async {
        let log = Log::default();
        let (a, _) = worker("a", Restart::Permanent, &log);
        let (b, pb) = worker("b", Restart::Permanent, &log);
        let root = spawn_root(args("", Strategy::OneForOne, vec![a, b])).await;
        let sibling = running_worker(&root, "a").await;

        tell(&root, "b", WorkerMsg::Panic).await;
        eventually!("b restarted", pb.starts() == 2);
        assert_eq!(root.get_status(), ActorStatus::Running);
        assert!(ping(&sibling).await, "sibling still answers");
        assert!(ping(&running_worker(&root, "b").await).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliberate_sibling_stops_do_not_count_toward_the_intensity() {
    bounded(async {
        let log = Log::default();
        let (a, pa) = worker("a", Restart::Permanent, &log);
        let (b, pb) = worker("b", Restart::Permanent, &log);
        let (c, pc) = worker("c", Restart::Permanent, &log);
        let mut args = args("", Strategy::OneForAll, vec![a, b, c]);
        args.intensity = Intensity {
            max_restarts: 1,
            period: Duration::from_secs(5),
        };
        let root = spawn_root(args).await;

        tell(&root, "b", WorkerMsg::Panic).await;
        eventually!("all restarted", log.len() == 8);
        assert_eq!((pa.starts(), pb.starts(), pc.starts()), (2, 2, 2));
        // The stop events of a and c were ignored: the root is still up.
        assert!(ping(&running_worker(&root, "c").await).await);
        assert_eq!(root.get_status(), ActorStatus::Running);
    })
    .await;
}
