//! The management API: HTTP + JSON on `mgmt.listen` (default
//! `127.0.0.1:18083`), what `roost ctl` talks to.
//!
//! ```text
//! /api/v1/...     bearer token (mgmt.token or <data_dir>/mgmt.token); 401 without it
//! /metrics        Prometheus/OpenMetrics text, unauthenticated (scrapers)
//! /health/live    200 while the process serves HTTP, unauthenticated
//! /health/ready   200 when the default listener and the broker subtree run and the store is open, else 503
//! ```
//!
//! Supervision: the [`Mgmt`] actor is the root supervisor's child `mgmt`
//! (permanent). It binds the socket in `pre_start` (so a node whose API
//! address is taken fails to start, loudly) and owns the axum server task;
//! stopping it stops accepting and lets in-flight requests finish, a panic
//! drops the task. A restart binds again. It holds no state of its own:
//! everything it shows is read live from [`BrokerCtx`] and the tree.
//!
//! Must not: keep gauges of its own (see [`metrics`]), or call the root
//! supervisor from `pre_start` (the root is still starting its children).

pub mod cluster;
mod cluster_metrics;
mod error;
mod handlers;
mod http;
pub mod log;
pub mod metrics;
mod query;
pub mod token;
pub mod types;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use roost_actors::broker::BrokerCtx;
use roost_actors::storage_owner::StorageSlot;
use roost_actors::supervisor::SupervisorMsg;
use roost_actors::AbortOnDrop;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use log::LogControl;

/// On a restart, the previous instance may still hold the port for a
/// moment (its task is being dropped): bind is retried this long.
const REBIND_FOR: Duration = Duration::from_secs(2);
/// How long a stopping server waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What every instance of the API serves from; outlives restarts of `mgmt`.
pub struct Shared {
    pub ctx: Arc<BrokerCtx>,
    /// The running `storage` actor (its store's counters, readiness).
    pub storage: StorageSlot,
    /// The bearer token `/api/v1` accepts.
    pub token: String,
    pub node_name: String,
    /// When the node started (uptime).
    pub started: Instant,
    /// Runtime log level control, when the process has one.
    pub log: Option<Arc<LogControl>>,
    /// The cluster layer, when it runs.
    pub cluster: Option<roost_cluster::Cluster>,
}

/// The handlers' state.
#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    /// The root supervisor (tree, restart).
    pub root: ActorRef<SupervisorMsg>,
}

/// The current `mgmt` actor, for [`crate::node::Node::mgmt_addr`].
pub type MgmtSlot = Arc<Mutex<Option<ActorRef<MgmtMsg>>>>;

pub struct Mgmt;

pub struct MgmtArgs {
    pub listen: SocketAddr,
    pub app: AppState,
    pub slot: MgmtSlot,
}

pub enum MgmtMsg {
    /// The bound address (useful when configured with port 0).
    LocalAddr(RpcReplyPort<SocketAddr>),
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for MgmtMsg {}

pub struct MgmtState {
    local_addr: SocketAddr,
    /// Sending (or dropping) it starts the server's graceful shutdown.
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<AbortOnDrop>,
}

impl Actor for Mgmt {
    type Msg = MgmtMsg;
    type State = MgmtState;
    type Arguments = MgmtArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MgmtMsg>,
        args: MgmtArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let socket = bind(args.listen).await?;
        let local_addr = socket.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = http::router(args.app);
        let server = tokio::spawn(async move {
            let stopped = async {
                let _ = stop.await;
            };
            if let Err(e) = axum::serve(socket, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                warn!(error = %e, "mgmt_server_failed");
            }
        });
        if let Ok(mut slot) = args.slot.lock() {
            *slot = Some(myself);
        }
        info!(addr = %local_addr, "mgmt_started");
        Ok(MgmtState {
            local_addr,
            shutdown: Some(shutdown),
            server: Some(AbortOnDrop(server)),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<MgmtMsg>,
        msg: MgmtMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MgmtMsg::LocalAddr(reply) => {
                let _ = reply.send(st.local_addr);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<MgmtMsg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stop accepting, let in-flight requests (e.g. the one that asked
        // for this restart) finish, then drop whatever is left.
        if let Some(tx) = st.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut server) = st.server.take() {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut server.0).await;
        }
        info!(addr = %st.local_addr, "mgmt_stopped");
        Ok(())
    }
}

/// Binds `addr`, retrying briefly while it is in use (a previous instance
/// that is being dropped).
async fn bind(addr: SocketAddr) -> Result<TcpListener, ActorProcessingErr> {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(
                    format!("cannot listen on {addr} (management API, mgmt.listen): {e}").into(),
                )
            }
        }
    }
}
