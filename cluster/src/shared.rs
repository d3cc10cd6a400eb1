//! What the cluster's actors share, and the handle the management API uses.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::ActorRef;
use roost_actors::broker::BrokerCtx;
use roost_storage::Storage;
use serde::{Deserialize, Serialize};

use crate::forward::{ForwarderMsg, PeerLink};
use crate::membership::MembershipMsg;
use crate::settings::ClusterSettings;
use crate::takeover::Takeovers;

/// Exact counters of the cluster layer (metrics).
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Messages handed to a peer's ingress.
    pub forwarded: AtomicU64,
    /// Messages received from peers and published here.
    pub received: AtomicU64,
    /// Forwarded entries received twice (after a reconnect) and skipped.
    pub duplicates_skipped: AtomicU64,
    pub undecodable: AtomicU64,
    pub peers_refused: AtomicU64,
    /// Shared-group messages a peer picked this node for after the group's
    /// last member here had gone (not delivered).
    pub shared_no_member: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    /// Partitions this node noticed (`partition_detected`).
    pub partitions_detected: AtomicU64,
    /// Heal rounds this node coordinated that restarted someone.
    pub heals: AtomicU64,
    /// Times this node restarted its cluster subtree to heal.
    pub heal_restarts: AtomicU64,
    /// Members removed by `cluster.autoclean`.
    pub autocleaned: AtomicU64,
    /// Sessions of one client on two nodes, merged into the newer one:
    /// this node's sent away, and other nodes' merged here.
    pub sessions_merged_out: AtomicU64,
    pub sessions_merged_in: AtomicU64,
    /// Messages another node's router sent after their client's session
    /// moved here (delivered), and those dropped because too many waited.
    pub redirected_in: AtomicU64,
    pub redirected_dropped: AtomicU64,
    /// Redirected messages whose session had moved on from here: sent on
    /// along this node's own redirect.
    pub redirected_onward: AtomicU64,
    /// Clients disconnected and sessions moved away by evacuations.
    pub evacuation_connections_evicted: AtomicU64,
    pub evacuation_sessions_migrated: AtomicU64,
}

pub struct ClusterShared {
    pub settings: ClusterSettings,
    pub ctx: Arc<BrokerCtx>,
    pub storage: Option<Storage>,
    /// Start time of this process (ms since the Unix epoch).
    pub incarnation: u64,
    /// Start time of the current `cluster` subtree (ms since the Unix epoch,
    /// bumped by every restart of the membership actor): a peer whose epoch
    /// changed restarted its cluster layer (and lost its view of the
    /// others); one that comes back with the same epoch was cut off.
    pub epoch: AtomicU64,
    pub partition: RwLock<Option<ActorRef<crate::partition::PartitionMsg>>>,
    /// The node's root supervisor: a heal restarts the `cluster` subtree
    /// through it. Set by the node once the tree runs.
    pub root: RwLock<Option<ActorRef<roost_actors::supervisor::SupervisorMsg>>>,
    pub links: RwLock<BTreeMap<String, Arc<PeerLink>>>,
    pub membership: RwLock<Option<ActorRef<MembershipMsg>>>,
    pub forwarder: RwLock<Option<ActorRef<ForwarderMsg>>>,
    pub counters: ClusterCounters,
    pub takeovers: Takeovers,
    /// Forwarded entries applied here: sender -> (its incarnation, last
    /// seq). Kept across restarts of the `cluster` subtree.
    pub applied: parking_lot::Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// Message identities applied here, by sender (kept across restarts
    /// of the `cluster` subtree, like `applied`).
    /// When each peer was last heard from through data (forward frames,
    /// their acknowledgements, pieces of a hand-over): the membership counts
    /// it as a heartbeat. A heartbeat queued behind a backlog on a slow
    /// link arrives late; the data ahead of it proves the peer alive.
    pub heard: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub applied_ids:
        parking_lot::Mutex<std::collections::HashMap<String, crate::forward::AppliedIds>>,
    /// Sessions handed over to a peer, until it confirms (peer, request id).
    pub pending_moves:
        parking_lot::Mutex<std::collections::HashMap<(String, u64), crate::takeover::PendingMove>>,
    /// Hand-overs this node got (sender, id), with when: a sender that got
    /// no `Received` sends the same one again, and it is merged only once.
    pub received_moves:
        parking_lot::Mutex<std::collections::HashMap<(String, u64), std::time::Instant>>,
    /// Redirected messages waiting for their client's session, by client.
    pub redirected: parking_lot::Mutex<
        std::collections::HashMap<String, std::collections::VecDeque<roost_storage::QueuedMessage>>,
    >,
    /// The running evacuation's progress (`crate::evacuation`).
    pub evacuation: parking_lot::Mutex<crate::evacuation::Progress>,
    pub evacuator: RwLock<Option<ActorRef<crate::evacuation::EvacuationMsg>>>,
    /// The rebalance this node coordinates (`crate::rebalance`).
    pub rebalance: parking_lot::Mutex<Option<crate::rebalance::RebalanceRun>>,
}

impl ClusterShared {
    pub fn new(
        settings: ClusterSettings,
        ctx: Arc<BrokerCtx>,
        storage: Option<Storage>,
    ) -> Arc<ClusterShared> {
        Arc::new(ClusterShared {
            settings,
            ctx,
            storage,
            incarnation: roost_actors::broker::unix_ms(),
            epoch: AtomicU64::new(0),
            partition: RwLock::new(None),
            root: RwLock::new(None),
            links: RwLock::new(BTreeMap::new()),
            membership: RwLock::new(None),
            forwarder: RwLock::new(None),
            counters: ClusterCounters::default(),
            takeovers: Takeovers::default(),
            applied: parking_lot::Mutex::new(std::collections::HashMap::new()),
            applied_ids: parking_lot::Mutex::new(std::collections::HashMap::new()),
            heard: parking_lot::Mutex::new(std::collections::HashMap::new()),
            redirected: parking_lot::Mutex::new(std::collections::HashMap::new()),
            pending_moves: parking_lot::Mutex::new(std::collections::HashMap::new()),
            received_moves: parking_lot::Mutex::new(std::collections::HashMap::new()),
            evacuation: parking_lot::Mutex::new(Default::default()),
            evacuator: RwLock::new(None),
            rebalance: parking_lot::Mutex::new(None),
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A new epoch for a (re)started cluster subtree: now, and always
    /// greater than the previous one.
    pub fn next_epoch(&self) -> u64 {
        let now = roost_actors::broker::unix_ms();
        let prev = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        let e = now.max(prev + 1);
        self.epoch.store(e, std::sync::atomic::Ordering::Release);
        e
    }

    /// The peers whose link is up now.
    pub fn up_peer_names(&self) -> Vec<String> {
        self.links
            .read()
            .iter()
            .filter(|(_, l)| l.up.load(std::sync::atomic::Ordering::Acquire))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn link(&self, peer: &str) -> Option<Arc<PeerLink>> {
        self.links.read().get(peer).cloned()
    }

    /// Data from `peer` arrived now (see [`ClusterShared::heard`]).
    pub fn heard_from(&self, peer: &str) {
        let now = std::time::Instant::now();
        let mut heard = self.heard.lock();
        match heard.get_mut(peer) {
            Some(at) => *at = now,
            None => {
                heard.insert(peer.to_owned(), now);
            }
        }
    }

    /// When data from `peer` last arrived.
    pub fn last_data_from(&self, peer: &str) -> Option<std::time::Instant> {
        self.heard.lock().get(peer).copied()
    }
}

/// One member as `roost ctl cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node: String,
    /// `up`, `down` or `joining` (known from a peer, never reached).
    pub status: String,
    pub address: String,
    /// This node itself.
    pub local: bool,
    /// ms since the Unix epoch; 0 = never.
    pub first_join_ms: u64,
    pub last_seen_ms: u64,
    /// Why it is down, when it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Its filters this node routes to it.
    pub routes: u64,
    /// Messages waiting to be forwarded to it, and dropped because its
    /// queue was full.
    pub forward_queue: u64,
    pub forward_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub node: String,
    pub listen: String,
    pub discovery: String,
    pub members: Vec<MemberStatus>,
}

/// The handle the rest of the node uses (management API, metrics).
#[derive(Clone)]
pub struct Cluster(pub Arc<ClusterShared>);

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Cluster {
    /// The sessions of every up peer whose client id contains `pattern`.
    pub async fn remote_clients(&self, pattern: Option<String>) -> crate::takeover::RemoteClients {
        crate::takeover::remote_clients(&self.0, pattern).await
    }

    fn membership(&self) -> Result<ActorRef<MembershipMsg>, String> {
        self.0
            .membership
            .read()
            .clone()
            .ok_or_else(|| "the cluster membership actor is not running (restarting?)".to_owned())
    }

    pub async fn status(&self) -> Result<ClusterStatus, String> {
        let m = self.membership()?;
        ractor::call_t!(m, MembershipMsg::Status, 5_000).map_err(|e| e.to_string())
    }

    /// Dial `address` (`host:port`) and wait until it has joined, or fail.
    pub async fn join(&self, address: String) -> Result<String, String> {
        let m = self.membership()?;
        ractor::call_t!(
            m,
            |reply| MembershipMsg::Join { address, reply },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(|e| e.to_string())?
    }

    pub async fn leave(&self) -> Result<(), String> {
        let m = self.membership()?;
        ractor::call_t!(m, MembershipMsg::Leave, CALL_TIMEOUT.as_millis() as u64)
            .map_err(|e| e.to_string())?
    }

    /// Forget a member that is down. `force`: even when this node is in a
    /// minority, or other members still see it up.
    pub async fn force_leave(&self, node: String, force: bool) -> Result<(), String> {
        let m = self.membership()?;
        ractor::call_t!(
            m,
            |reply| MembershipMsg::ForceLeave { node, force, reply },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(|e| e.to_string())?
    }

    fn evacuator(&self) -> Result<ActorRef<crate::evacuation::EvacuationMsg>, String> {
        self.0
            .evacuator
            .read()
            .clone()
            .ok_or_else(|| "the evacuation actor is not running (restarting?)".to_owned())
    }

    /// Start evacuating this node (see [`crate::evacuation`]); refused
    /// with the reason when the parameters are wrong or one is running.
    pub async fn evacuation_start(
        &self,
        params: crate::evacuation::EvacuationParams,
    ) -> Result<crate::evacuation::EvacuationStatus, EvacuationError> {
        let members: Vec<String> = self
            .status()
            .await
            .map_err(EvacuationError::Failed)?
            .members
            .into_iter()
            .map(|m| m.node)
            .collect();
        params
            .validate(&self.0.settings.node_name, &members)
            .map_err(EvacuationError::Invalid)?;
        let e = self.evacuator().map_err(EvacuationError::Failed)?;
        ractor::call_t!(
            e,
            |reply| crate::evacuation::EvacuationMsg::Start(params, reply),
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(|e| EvacuationError::Failed(e.to_string()))?
        .map_err(EvacuationError::Conflict)
    }

    /// Stop the running evacuation: connections are served again.
    pub async fn evacuation_stop(
        &self,
    ) -> Result<crate::evacuation::EvacuationStatus, EvacuationError> {
        let e = self.evacuator().map_err(EvacuationError::Failed)?;
        ractor::call_t!(
            e,
            crate::evacuation::EvacuationMsg::Stop,
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(|e| EvacuationError::Failed(e.to_string()))?
        .map_err(EvacuationError::Conflict)
    }

    pub async fn evacuation_status(&self) -> Result<crate::evacuation::EvacuationStatus, String> {
        let e = self.evacuator()?;
        ractor::call_t!(e, crate::evacuation::EvacuationMsg::Status, 5_000)
            .map_err(|e| e.to_string())
    }
}

impl Cluster {
    /// Plan and start a rebalance coordinated by this node.
    pub async fn rebalance_start(
        &self,
        params: crate::rebalance::RebalanceParams,
    ) -> Result<crate::rebalance::RebalanceStatus, EvacuationError> {
        crate::rebalance::start(&self.0, params).await
    }

    pub async fn rebalance_stop(
        &self,
    ) -> Result<crate::rebalance::RebalanceStatus, EvacuationError> {
        crate::rebalance::stop(&self.0).await
    }

    /// The rebalance this node coordinates (stage `off` when none).
    pub async fn rebalance_status(&self) -> crate::rebalance::RebalanceStatus {
        match crate::rebalance::status(&self.0).await {
            Some(s) => s,
            None => crate::rebalance::RebalanceStatus {
                coordinator: self.0.settings.node_name.clone(),
                stage: "off".into(),
                started_ms: 0,
                params: None,
                plan: None,
                donors: Vec::new(),
                silent: Vec::new(),
            },
        }
    }
}

/// Why an evacuation or a rebalance could not be started or stopped.
#[derive(Debug)]
pub enum EvacuationError {
    /// Bad parameters (400).
    Invalid(String),
    /// Already running, or not running (409).
    Conflict(String),
    /// The actors did not answer (503).
    Failed(String),
}
