//! A small worker actor the supervisor tests drive: it can be told to panic,
//! to return an error or to stop, counts its starts and logs its starts and
//! graceful stops into a log shared by a test's workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::supervisor::{ChildSpec, Restart};

/// `start:NAME` / `stop:NAME` entries, in the order they happened.
#[derive(Clone, Default)]
pub(super) struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub(super) fn push(&self, entry: String) {
        self.0.lock().push(entry);
    }

    pub(super) fn entries(&self) -> Vec<String> {
        self.0.lock().clone()
    }

    pub(super) fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// What a test observes of one worker (or of a group sharing it).
#[derive(Clone, Default)]
pub(super) struct Probe {
    pub(super) starts: Arc<AtomicUsize>,
    pub(super) log: Log,
}

impl Probe {
    pub(super) fn with_log(log: &Log) -> Self {
        Self {
            starts: Arc::default(),
            log: log.clone(),
        }
    }

    pub(super) fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

/// Misbehaviour to configure.
#[derive(Clone, Copy, Default)]
pub(super) struct WorkerOpts {
    /// `post_stop` sleeps this long (a child that ignores stop requests).
    pub(super) stop_delay: Duration,
    /// `post_start` fails on this start number (1-based).
    pub(super) fail_post_start_on: Option<usize>,
}

pub(super) enum WorkerMsg {
    Panic,
    Fail,
    Stop(Option<String>),
    Ping(RpcReplyPort<()>),
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for WorkerMsg {}

pub(super) struct Worker;

pub(super) struct WorkerArgs {
    name: String,
    probe: Probe,
    opts: WorkerOpts,
}

impl WorkerArgs {
    pub(super) fn new(name: &str, probe: &Probe) -> Self {
        Self {
            name: name.to_owned(),
            probe: probe.clone(),
            opts: WorkerOpts::default(),
        }
    }
}

pub(super) struct WorkerState {
    name: String,
    probe: Probe,
    opts: WorkerOpts,
    start_number: usize,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let start_number = args.probe.starts.fetch_add(1, Ordering::SeqCst) + 1;
        args.probe.log.push(format!("start:{}", args.name));
        Ok(WorkerState {
            name: args.name,
            probe: args.probe,
            opts: args.opts,
            start_number,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.opts.fail_post_start_on == Some(state.start_number) {
            return Err("post_start told to fail".into());
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        tokio::time::sleep(state.opts.stop_delay).await;
        state.probe.log.push(format!("stop:{}", state.name));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        _state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Panic => panic!("worker told to panic"),
            WorkerMsg::Fail => return Err("worker told to fail".into()),
            WorkerMsg::Stop(reason) => myself.stop(reason),
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// A worker child reporting into `probe`.
pub(super) fn worker_spec(
    name: &str,
    restart: Restart,
    probe: &Probe,
    opts: WorkerOpts,
) -> ChildSpec {
    let (child_name, probe) = (name.to_owned(), probe.clone());
    ChildSpec::for_actor(name, move || {
        let args = WorkerArgs {
            name: child_name.clone(),
            probe: probe.clone(),
            opts,
        };
        (Worker, args)
    })
    .with_restart(restart)
}

/// A well-behaved worker child with its own probe sharing `log`.
pub(super) fn worker(name: &str, restart: Restart, log: &Log) -> (ChildSpec, Probe) {
    let probe = Probe::with_log(log);
    let spec = worker_spec(name, restart, &probe, WorkerOpts::default());
    (spec, probe)
}
