//! The chaos harness's scenarios (issue #5, docs/CHAOS.md) in their short
//! mode, against this build's `roost` binary: real node processes behind
//! the harness's fault proxy, recorded load at QoS 0/1/2, the history
//! checked. Each test asserts that its scenario passes: no acknowledged
//! QoS 1/2 message lost, no QoS 2 duplicate, the fault seen by the nodes,
//! and the cluster converged again after it.
//!
//! The scenarios run one at a time (a shared lock): each starts 2 or 3
//! nodes and a load, too much to run side by side on a small CI machine.
//! Each is bounded by [`LIMIT`]; dropping a scenario (timeout or panic)
//! kills its nodes. `CHAOS_KEEP=1` keeps each run directory (configs, data,
//! node logs) and prints its path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use roost_chaos::nodes::{Cluster, ClusterOptions};
use roost_chaos::scenario::{self, Kind, Options};

const BIN: &str = env!("CARGO_BIN_EXE_roost");

/// Bound on one scenario (the short mode takes 10 to 30 s).
const LIMIT: Duration = Duration::from_secs(150);

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(kind: Kind) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opts = Options {
        long: false,
        nodes: None,
        roost: BIN.into(),
        keep: std::env::var_os("CHAOS_KEEP").is_some(),
        base_dir: None,
    };
    let t0 = Instant::now();
    // The scenario runs on this thread (block_on): the nodes it starts
    // die with it (PR_SET_PDEATHSIG) even if the test binary is killed.
    let report =
        runtime.block_on(async { tokio::time::timeout(LIMIT, scenario::run(kind, &opts)).await });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = report.unwrap_or_else(|_| panic!("{}: not done within {LIMIT:?}", kind.name()));
    eprintln!("{}", report.human());
    eprintln!("{} took {:?}", kind.name(), t0.elapsed());
    if !report.passed {
        let logs: Vec<String> = report
            .node_logs
            .iter()
            .map(|(node, lines)| format!("--- {node}: last warnings and errors\n{lines}"))
            .collect();
        panic!(
            "{} failed:\n{}\n{}",
            kind.name(),
            report.human(),
            logs.join("\n")
        );
    }
}

/// The harness itself against real nodes: formation seen through the
/// management API, a split through the proxy seen and healed, metrics
/// read, a SIGSTOP seen, and a node dying behind the harness's back
/// reported as such (converged() does not accept it).
#[test]
fn harness_sees_splits_stops_and_unexpected_exits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, self_check())
            .await
            .expect("self check within the limit");
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

async fn self_check() {
    let opts = ClusterOptions::default();
    let mut c = Cluster::start(2, BIN.as_ref(), &opts).await.expect("start");
    let (n1, n2) = (c.node(0).name.clone(), c.node(1).name.clone());
    c.converged(Duration::from_secs(20)).await.expect("formed");
    let view = c.status(0).await.unwrap();
    assert_eq!(view.get(&n2).map(String::as_str), Some("up"), "{view:?}");
    let up = c.metric(0, "roost_cluster_members{status=\"up\"}").await;
    assert_eq!(up, Some(1.0));
    assert!(c.proxy().forwarded(0, 1) > 0 && c.proxy().forwarded(1, 0) > 0);

    // A split through the proxy is seen by both sides, then heals.
    c.proxy().partition(&[vec![0], vec![1]]);
    let t0 = Instant::now();
    loop {
        let a = c.status(0).await.unwrap();
        let b = c.status(1).await.unwrap();
        if a.get(&n2).map(String::as_str) == Some("down")
            && b.get(&n1).map(String::as_str) == Some("down")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "split not seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.check_converged().await.is_err(),
        "a split is not converged"
    );
    c.proxy().heal();
    c.converged(Duration::from_secs(20)).await.expect("healed");

    // SIGSTOP: a stopped node is not running; the other sees it down.
    c.stop(1).unwrap();
    c.converged(Duration::from_secs(10))
        .await
        .expect("n1 alone sees n2 down");
    c.cont(1).unwrap();
    c.converged(Duration::from_secs(20)).await.expect("n2 back");

    // Killed behind the harness's back: reported, never "converged".
    let pid = c.pid(1).unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let t0 = Instant::now();
    let err = c.converged(Duration::from_secs(20)).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10), "{err:#}");
    assert!(format!("{err:#}").contains("exited on its own"), "{err:#}");
    let exits = c.unexpected_exits();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert!(exits[0].starts_with(&n2), "{exits:?}");

    // A restart on the same name, ports and data dir serves again (the
    // exit stays on record).
    c.restart(1).await.expect("restart");
    assert_eq!(c.unexpected_exits().len(), 1);
    let run_dir = c.run_dir().to_owned();
    drop(c);
    assert!(!run_dir.exists(), "run dir removed");
}

// Known broker gap (issue #5 notes). The merge-overlap duplicates are gone
// (message identity); about 1 run in 5 under CPU load still has one or two
// QoS 2 duplicates: a message in flight to the subscriber on the killed
// node reached it, the subscriber got Session Present = 0 elsewhere (and
// dropped its QoS 2 state, as MQTT says), and the restored session, merged
// into the new one, sends it again. Run it with
// `cargo test --test chaos -- --ignored`.
#[test]
#[ignore = "known gap: a QoS 2 message in flight on the killed node is sent again after the merge, about 1 run in 5 under load (issue #5)"]
fn kill_restart() {
    run(Kind::KillRestart);
}

#[test]
fn partition_heal() {
    run(Kind::PartitionHeal);
}

#[test]
fn two_node_split() {
    run(Kind::TwoNodeSplit);
}

#[test]
fn three_way_split() {
    run(Kind::ThreeWaySplit);
}

// Known broker gap (issue #5 notes): the session-move window is closed
// (the redirect, with message identity dropping its second copies), but
// about 1 run in 3 under CPU load still has one QoS 2 duplicate (seen
// once: a single message around a session move).
#[test]
#[ignore = "known gap: a rare single QoS 2 duplicate around a session move, about 1 run in 3 under load (issue #5)"]
fn stale_peer_restart() {
    run(Kind::StalePeerRestart);
}

#[test]
fn flapping_link() {
    run(Kind::FlappingLink);
}

#[test]
fn slow_node() {
    run(Kind::SlowNode);
}
