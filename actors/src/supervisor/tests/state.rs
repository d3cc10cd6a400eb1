//! The bookkeeping alone, driven step by step, for the interleavings the
//! actor tests cannot force deterministically.

use std::time::SystemTime;

use ractor::{Actor, ActorCell};
use tokio::time::Instant;

use super::worker::{worker, Log, Probe, Worker, WorkerArgs};
use super::*;
use crate::supervisor::state::{Decision, Exit, Step, SupervisorState};
use crate::supervisor::Restart;

/// A live, unlinked actor: only its id and cell matter here.
async fn cell() -> ActorCell {
    let args = WorkerArgs::new("dummy", &Probe::default());
    let (actor, _) = Actor::spawn(None, Worker, args).await.expect("spawns");
    actor.get_cell()
}

async fn state(strategy: Strategy, names: &[&str]) -> SupervisorState {
    let mut state = SupervisorState::new(cell().await, String::new(), strategy, lenient());
    for name in names {
        let (spec, _) = worker(name, Restart::Permanent, &Log::default());
        let key = state.add(spec, None);
        state.queue_start(key);
    }
    state
}

fn start_step(state: &mut SupervisorState) -> (u64, u64) {
    match state.next_step() {
        Some(Step::Start { key, token, .. }) => (key, token),
        _ => panic!("expected a start step"),
    }
}

#[tokio::test]
async fn exit_reported_before_start_done_is_applied_once_the_child_is_known() {
    let mut state = state(Strategy::OneForOne, &["a"]).await;
    let (key, token) = start_step(&mut state);
    let child = cell().await;
    let now = SystemTime::now();

    let early = state.on_exit(child.get_id(), Exit::Abnormal("boom".into()), now);
    assert_eq!(early, Decision::Nothing);
    assert_eq!(
        state.start_done(key, token, Ok(child), now),
        Decision::Restart(key)
    );
    assert!(state.which_children()[0].cell.is_none());
}

#[tokio::test]
async fn start_result_made_stale_by_a_sibling_restart_is_stopped_and_started_again() {
    let mut state = state(Strategy::OneForAll, &["a", "b"]).await;
    let now = SystemTime::now();
    let (a_key, a_token) = start_step(&mut state);
    let a = cell().await;
    assert_eq!(
        state.start_done(a_key, a_token, Ok(a.clone()), now),
        Decision::Nothing
    );
    let (b_key, b_token) = start_step(&mut state);

    // a fails while b's start is in flight: one_for_all takes b down too.
    let decision = state.on_exit(a.get_id(), Exit::Abnormal("boom".into()), now);
    assert_eq!(decision, Decision::Restart(a_key));
    assert!(state.allow_restart(Instant::now()));
    state.plan_restart(a_key);
    let b = cell().await;
    assert_eq!(
        state.start_done(b_key, b_token, Ok(b.clone()), now),
        Decision::Nothing
    );

    match state.next_step() {
        Some(Step::Stops(items)) => {
            let ids: Vec<_> = items.iter().map(|item| item.cell.get_id()).collect();
            assert_eq!(ids, [b.get_id()]);
        }
        _ => panic!("the stale b must be stopped first"),
    }
    assert!(state.next_step().is_none(), "one step at a time");
    state.stops_done();
    assert_eq!(start_step(&mut state).0, a_key);
    // The stale b's exit event is expected and ignored.
    let ignored = state.on_exit(b.get_id(), Exit::Normal(Some("shutdown".into())), now);
    assert_eq!(ignored, Decision::Nothing);
}

#[tokio::test]
async fn intensity_window_slides() {
    let mut state = SupervisorState::new(
        cell().await,
        String::new(),
        Strategy::OneForOne,
        Intensity {
            max_restarts: 2,
            period: Duration::from_secs(1),
        },
    );
    let t0 = Instant::now();
    assert!(state.allow_restart(t0));
    assert!(state.allow_restart(t0 + Duration::from_millis(100)));
    assert!(!state.allow_restart(t0 + Duration::from_millis(200)));
    // The first two fell out of the window.
    assert!(state.allow_restart(t0 + Duration::from_millis(1150)));
}

#[test]
fn only_none_normal_and_shutdown_are_normal_exits() {
    for reason in [None, Some("normal"), Some("shutdown")] {
        let exit = Exit::terminated(reason.map(str::to_owned));
        assert!(matches!(exit, Exit::Normal(_)), "{reason:?}");
    }
    for reason in ["killed", "Drained", "lost_connection"] {
        let exit = Exit::terminated(Some(reason.to_owned()));
        assert!(matches!(exit, Exit::Abnormal(_)), "{reason}");
    }
}
