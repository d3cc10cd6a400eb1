//! Node assembly: builds the root supervision tree from a [`Config`] and
//! runs it until shutdown.
//!
//! ```text
//! roost (one_for_one)
//! ├── storage         owner of the durable store (<data_dir>/store)
//! ├── broker (rest_for_one)
//! │   ├── router      route table writer
//! │   ├── retainer    retained-message upkeep
//! │   └── sessions    client registry + session actors (temporary)
//! ├── bridges (one_for_one)
//! │   └── <name>      one bridge actor per [[bridges]] (`roost_actors::bridge`)
//! ├── alarms          memory high watermark (`roost_actors::alarms`)
//! ├── listeners (one_for_one)
//! │   └── tcp:default listener + connection actors (temporary)
//! ├── cluster         membership, forwarding, takeover, partitions (`roost_cluster`)
//! ├── evacuation      a running node evacuation (`roost_cluster::evacuation`)
//! ├── sys             $SYS topics publisher (`crate::sys`; absent if disabled)
//! └── mgmt            management API + /metrics (`crate::mgmt`)
//! ```
//! The store is opened (and the retained messages loaded from it) before
//! the tree is built: a node that cannot open its store must not start, and
//! no client may connect before the durable state is back. `storage` starts
//! first and stops last. `broker` is rest_for_one: a restarted router starts
//! with an empty table, so the sessions after it restart too and the table
//! is rebuilt from live clients. `bridges` starts after `broker` (its
//! actors attach their route sinks to the table) and before the listeners,
//! so a bridged message published by the first client is already queued;
//! each bridge restarts on its own. `alarms` starts before the listeners, so
//! the memory alarm is known before the first accept. Listeners are
//! independent of each other.
//! `mgmt` starts last, so the API answers only once MQTT is served, and
//! stops first.
//!
//! Start never waits for anything but this node's own resources (the data
//! directory, its store and the listen socket).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use ractor::{Actor, ActorRef};
use roost_actors::alarms::{Alarms, AlarmsArgs};
use roost_actors::bridge::BridgeHandle;
use roost_actors::broker::{BrokerConfig, BrokerCtx};
use roost_actors::listener::{Listener, ListenerArgs, ListenerMsg};
use roost_actors::overflow::{OverflowConfig, OverflowMode};
use roost_actors::rate_limit::PublishLimits;
use roost_actors::registry::{Registry, RegistryArgs, RegistryMsg};
use roost_actors::retainer::{Retainer, RetainerArgs};
use roost_actors::router::{Router, RouterArgs};
use roost_actors::storage_owner::{StorageOwner, StorageOwnerArgs, StorageSlot};
use roost_actors::supervisor::{
    child_spec_supervisor, ChildSpec, Intensity, Restart, StartCtx, Strategy, Supervisor,
    SupervisorArgs, SupervisorMsg, TreeNode,
};
use roost_protocol::channel::ChannelConfig;
use roost_protocol::packet::{reason, ProtocolVersion, QoS};
use roost_protocol::session::SessionConfig;
use roost_storage::{Storage, StorageError, StorageOptions};
use tracing::{info, warn};

use crate::config::Config;
use crate::mgmt::{self, AppState, LogControl, Mgmt, MgmtArgs, MgmtMsg, MgmtSlot};
use crate::sys::{Sys, SysArgs};

/// Name of the default TCP listener in the tree (`listeners/tcp:default`).
pub const DEFAULT_LISTENER: &str = "tcp:default";

/// The durable store's directory in the data directory.
const STORE_DIR: &str = "store";

/// A running broker node.
pub struct Node {
    root: ActorRef<SupervisorMsg>,
    ctx: Arc<BrokerCtx>,
    config: Config,
    mgmt: MgmtSlot,
    cluster: roost_cluster::Cluster,
    join: tokio::task::JoinHandle<()>,
}

/// What a node gets from the process around it, beyond its config.
#[derive(Default)]
pub struct NodeOptions {
    /// Runtime log level control for `PUT /api/v1/log/level`; without it
    /// that endpoint answers 501.
    pub log: Option<Arc<LogControl>>,
}

impl Node {
    /// Start a node: open the data directory, build the supervision tree,
    /// bind the listener and the management API. Returns once MQTT is served.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        Node::start_with(config, NodeOptions::default()).await
    }

    /// [`Node::start`] with options from the embedding process.
    pub async fn start_with(config: Config, options: NodeOptions) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                config.node.data_dir.display()
            )
        })?;
        let token = mgmt::token::resolve(&config)?;
        let storage = open_storage(&config).await?;
        let ctx =
            BrokerCtx::with_storage(broker_config(&config), random_seed(), Some(storage.clone()));
        load_retained(&ctx, storage.clone(), &store_dir(&config.node.data_dir)).await?;
        let storage_slot = StorageSlot::default();
        let cluster = roost_cluster::ClusterShared::new(
            cluster_settings(&config)?,
            ctx.clone(),
            Some(storage.clone()),
        );
        let shared = Arc::new(mgmt::Shared {
            ctx: ctx.clone(),
            storage: storage_slot.clone(),
            token,
            node_name: config.node.name.clone(),
            started: Instant::now(),
            log: options.log,
            cluster: Some(roost_cluster::Cluster(cluster.clone())),
        });
        let slot: MgmtSlot = Arc::new(Mutex::new(None));
        let args = SupervisorArgs {
            path: String::new(),
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 3,
                period: Duration::from_secs(30),
            },
            children: [
                Some(storage_spec(storage, storage_slot)),
                Some(broker_spec(&ctx)),
                Some(bridges_spec(&ctx, &config)),
                Some(alarms_spec(
                    &ctx,
                    config.node.memory_check_interval.as_duration(),
                )),
                Some(listeners_spec(&ctx, config.mqtt.listen)),
                Some(roost_cluster::cluster_spec(cluster.clone())),
                Some(roost_cluster::evacuation_spec(cluster.clone())),
                sys_spec(shared.clone(), config.sys_topics.interval.as_duration()),
                Some(mgmt_spec(shared, config.mgmt.listen, slot.clone())),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        let (root, join) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| anyhow!("node failed to start: {e}"))?;
        // A heal restarts the `cluster` subtree through the root.
        *cluster.root.write() = Some(root.clone());
        let join = tokio::spawn(async move {
            let _ = join.await;
        });
        info!(node = %config.node.name, mqtt = %config.mqtt.listen, mgmt = %config.mgmt.listen, "node_started");
        Ok(Node {
            root,
            ctx,
            config,
            mgmt: slot,
            cluster: roost_cluster::Cluster(cluster),
            join,
        })
    }

    /// The cluster layer (membership status, join, leave).
    pub fn cluster(&self) -> &roost_cluster::Cluster {
        &self.cluster
    }

    pub fn ctx(&self) -> &Arc<BrokerCtx> {
        &self.ctx
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn root(&self) -> &ActorRef<SupervisorMsg> {
        &self.root
    }

    /// The bound address of the default MQTT listener.
    pub async fn mqtt_addr(&self) -> anyhow::Result<SocketAddr> {
        let listener = self.listener(DEFAULT_LISTENER).await?;
        Ok(ractor::call!(listener, ListenerMsg::LocalAddr)?)
    }

    /// The bound address of the management API.
    pub async fn mgmt_addr(&self) -> anyhow::Result<SocketAddr> {
        let mgmt = self
            .mgmt
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .ok_or_else(|| anyhow!("the management API is not running"))?;
        Ok(ractor::call!(mgmt, MgmtMsg::LocalAddr)?)
    }

    async fn listener(&self, name: &str) -> anyhow::Result<ActorRef<ListenerMsg>> {
        self.ctx
            .listener(name)
            .ok_or_else(|| anyhow!("no listener {name}"))
    }

    /// The live supervision tree.
    pub async fn tree(&self) -> anyhow::Result<TreeNode> {
        Ok(roost_actors::supervisor::tree(&self.root).await?)
    }

    /// Restart the subtree at `path` (e.g. `broker/router`).
    pub async fn restart(&self, path: &str) -> anyhow::Result<()> {
        Ok(roost_actors::supervisor::restart_path(&self.root, path).await?)
    }

    /// Resolves when the root supervisor stopped (e.g. restart intensity
    /// exceeded at the top).
    pub async fn wait(&mut self) {
        let _ = (&mut self.join).await;
    }

    /// Graceful shutdown: stop accepting, tell every client "server shutting
    /// down" (0x8B, 5.0 clients), wait for the connections to close, stop
    /// the tree.
    pub async fn shutdown(self) {
        let timeout = self.config.mqtt.shutdown_timeout.as_duration();
        match self.listener(DEFAULT_LISTENER).await {
            Ok(l) => match ractor::call!(l, ListenerMsg::Drain, timeout) {
                Ok(0) => {}
                Ok(left) => warn!(left, "connections_left_at_shutdown"),
                Err(e) => warn!(error = %e, "listener_drain_failed"),
            },
            Err(e) => warn!(error = %e, "listener_not_found_at_shutdown"),
        }
        if let Some(reg) = self.ctx.registry() {
            let _ = reg.cast(RegistryMsg::KickAll(reason::SERVER_SHUTTING_DOWN));
        }
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(timeout * 2))
            .await;
        let _ = self.join.await;
        info!(node = %self.config.node.name, "node_stopped");
    }
}

/// `<data_dir>/store`.
/// The cluster layer's settings from `[cluster]` (validated already).
pub fn cluster_settings(config: &Config) -> anyhow::Result<roost_cluster::ClusterSettings> {
    let c = &config.cluster;
    let cookie = mgmt::token::cluster_cookie(config)?;
    let mut s = roost_cluster::ClusterSettings::new(&config.node.name, c.listen, &cookie);
    s.cluster_name.clone_from(&c.name);
    if !c.advertise.is_empty() {
        s.advertise.clone_from(&c.advertise);
    }
    s.discovery = crate::config::discovery_settings(c)
        .map_err(|e| anyhow!("invalid cluster discovery settings: {e}"))?;
    s.discovery_interval = c.dns_interval.as_duration();
    s.heartbeat_interval = c.heartbeat_interval.as_duration();
    s.heartbeat_timeout = c.heartbeat_timeout.as_duration();
    s.connect_timeout = c.connect_timeout.as_duration();
    s.reconnect_max = c.reconnect_max.as_duration();
    s.forward_buffer = c.forward_buffer.as_u64();
    s.forward_durable = c.forward_queue == "durable";
    s.autoheal = c.autoheal;
    s.autoclean = (!c.autoclean.is_zero()).then(|| c.autoclean.as_duration());
    s.peer_addresses.clone_from(&c.peer_addresses);
    Ok(s)
}

fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_DIR)
}

/// The store's view of the config.
fn storage_options(cfg: &Config) -> StorageOptions {
    StorageOptions {
        sync: cfg.storage.sync,
        quarantine_corrupt: cfg.storage.quarantine_corrupt,
    }
}

/// Open `<data_dir>/store` on a blocking thread (RocksDB reads its files,
/// and may replay its write-ahead log). A failure names the path and the
/// cause, and says what the operator can do about it.
async fn open_storage(config: &Config) -> anyhow::Result<Storage> {
    let dir = store_dir(&config.node.data_dir);
    let options = storage_options(config);
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Storage::open(dir, options)).await?
    };
    opened.map_err(|e| open_error(&config.node.data_dir, &dir, e))
}

fn open_error(data_dir: &Path, store: &Path, e: StorageError) -> anyhow::Error {
    let hint = match &e {
        StorageError::Locked { .. } => Some(
            "stop the other node, or start this one on another data dir \
             (node.data_dir, --data-dir, ROOST_NODE__DATA_DIR)"
                .to_string(),
        ),
        StorageError::Corrupt { .. } => Some(format!(
            "to move it aside to {}.corrupt-<UTC time> (kept for inspection) and start \
             with an empty store, set storage.quarantine_corrupt = true \
             (or ROOST_STORAGE__QUARANTINE_CORRUPT=true)",
            store.display()
        )),
        _ => None,
    };
    let cause = anyhow::Error::from(e);
    let data_dir = data_dir.display();
    match hint {
        Some(hint) => {
            anyhow!("cannot open the store of data dir {data_dir}: {cause:#}\n  hint: {hint}")
        }
        None => anyhow!("cannot open the store of data dir {data_dir}: {cause:#}"),
    }
}

/// Load the retained messages into memory (see `RetainedStore::attach_storage`
/// for why here and not in the retainer).
async fn load_retained(ctx: &Arc<BrokerCtx>, storage: Storage, store: &Path) -> anyhow::Result<()> {
    let retained = ctx.retained.clone();
    let loaded = tokio::task::spawn_blocking(move || retained.attach_storage(storage))
        .await?
        .map_err(|e| {
            anyhow!(
                "cannot load the retained messages from the store {}: {:#}",
                store.display(),
                anyhow::Error::from(e)
            )
        })?;
    info!(retained = loaded, "retained_loaded");
    Ok(())
}

/// `storage`: holds a clone of the store for the tree and the API.
fn storage_spec(storage: Storage, slot: StorageSlot) -> ChildSpec {
    ChildSpec::for_actor("storage", move || {
        (
            StorageOwner,
            StorageOwnerArgs {
                storage: storage.clone(),
                slot: slot.clone(),
            },
        )
    })
}

fn broker_spec(ctx: &Arc<BrokerCtx>) -> ChildSpec {
    let (c1, c2, c3) = (ctx.clone(), ctx.clone(), ctx.clone());
    let children = vec![
        ChildSpec::for_actor("router", move || {
            (
                Router,
                RouterArgs {
                    table: c1.routes.clone(),
                    slot: c1.router.clone(),
                },
            )
        }),
        ChildSpec::for_actor("retainer", move || {
            (
                Retainer,
                RetainerArgs {
                    store: c2.retained.clone(),
                    sweep_interval: Duration::from_secs(10),
                },
            )
        }),
        ChildSpec::for_actor("sessions", move || {
            (Registry, RegistryArgs { ctx: c3.clone() })
        }),
    ];
    let args = move || SupervisorArgs {
        path: String::new(),
        strategy: Strategy::RestForOne,
        intensity: Intensity {
            max_restarts: 5,
            period: Duration::from_secs(10),
        },
        children: children.clone(),
    };
    child_spec_supervisor("broker", args, Restart::Permanent)
}

/// `bridges`: one bridge actor per configured bridge, each restarted on its
/// own. Their handles (and so their mailboxes) are registered here, once per
/// node start, and outlive the actors' restarts.
fn bridges_spec(ctx: &Arc<BrokerCtx>, config: &Config) -> ChildSpec {
    let children: Vec<ChildSpec> = config
        .bridges
        .iter()
        .map(|b| {
            let handle = BridgeHandle::new(bridge_config(b));
            ctx.bridges.insert(handle.clone());
            roost_actors::bridge::child_spec(handle, ctx.clone())
        })
        .collect();
    let args = move || SupervisorArgs {
        path: String::new(),
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 10,
            period: Duration::from_secs(10),
        },
        children: children.clone(),
    };
    child_spec_supervisor("bridges", args, Restart::Permanent)
}

/// A bridge's config as its actor takes it (validated by `Config::validate`).
pub fn bridge_config(b: &crate::config::BridgeConfig) -> roost_actors::bridge::BridgeConfig {
    let buf = &b.buffer;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    use roost_actors::bridge::{BridgeKind, HttpSinkConfig, IngressConfig};
    let kind = match b.kind.as_str() {
        "mqtt_ingress" => BridgeKind::MqttIngress(IngressConfig {
            remote_topics: b.remote_topics.clone(),
            local_prefix: b.local_prefix.clone(),
        }),
        "http" => BridgeKind::Http(HttpSinkConfig {
            headers: b.headers.clone().into_iter().collect(),
            request_timeout: b.request_timeout.as_duration(),
            batch_size: b.batch_size as usize,
        }),
        _ => BridgeKind::MqttEgress,
    };
    roost_actors::bridge::BridgeConfig {
        name: b.name.clone(),
        remote: if b.kind == "http" {
            b.url.clone()
        } else {
            b.remote.clone()
        },
        kind,
        client_id: non_empty(&b.client_id).unwrap_or_else(|| format!("roost-bridge-{}", b.name)),
        clean_start: b.clean_start,
        session_expiry: u32::try_from(b.session_expiry.as_duration().as_secs()).unwrap_or(u32::MAX),
        protocol: match b.protocol.as_str() {
            "3.1.1" => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        },
        username: non_empty(&b.username),
        password: non_empty(&b.password),
        keep_alive: b.keep_alive.as_duration(),
        local_topics: b.local_topics.clone(),
        remote_prefix: b.remote_prefix.clone(),
        qos: if b.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        max_inflight: b.max_inflight,
        connect_timeout: b.connect_timeout.as_duration(),
        reconnect_min: b.reconnect_min.as_duration(),
        reconnect_max: b.reconnect_max.as_duration(),
        ack_timeout: b.ack_timeout.as_duration(),
        buffer: OverflowConfig {
            mode: match buf.mode.as_str() {
                "memory" => OverflowMode::Memory,
                "volatile_offload" => OverflowMode::VolatileOffload,
                _ => OverflowMode::Durable,
            },
            memory_bytes: buf.memory_bytes.as_u64(),
            max_bytes: buf.max_bytes.as_u64(),
            request_ttl: buf.request_ttl.map(|t| t.as_duration()),
        },
    }
}

/// `alarms`: the memory high watermark (`roost_actors::alarms`). Before the
/// listeners, so that its first check is done when they start accepting.
fn alarms_spec(ctx: &Arc<BrokerCtx>, interval: Duration) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor("alarms", move || {
        (
            Alarms,
            AlarmsArgs {
                ctx: ctx.clone(),
                interval,
            },
        )
    })
}

fn listeners_spec(ctx: &Arc<BrokerCtx>, addr: SocketAddr) -> ChildSpec {
    let c = ctx.clone();
    let tcp = ChildSpec::for_actor(DEFAULT_LISTENER, move || {
        (
            Listener,
            ListenerArgs {
                name: DEFAULT_LISTENER.to_string(),
                addr,
                ctx: c.clone(),
            },
        )
    });
    let args = move || SupervisorArgs {
        path: String::new(),
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 10,
            period: Duration::from_secs(10),
        },
        children: vec![tcp.clone()],
    };
    child_spec_supervisor("listeners", args, Restart::Permanent)
}

/// `sys`: the `$SYS` publisher (`crate::sys`), absent when its interval is
/// zero. It reads the tree for the restart counts, like `/metrics`.
fn sys_spec(shared: Arc<mgmt::Shared>, interval: Duration) -> Option<ChildSpec> {
    if interval.is_zero() {
        return None;
    }
    Some(ChildSpec::new("sys", move |start: StartCtx| {
        let args = SysArgs {
            app: AppState {
                shared: shared.clone(),
                root: ActorRef::from(start.supervisor.clone()),
            },
            interval,
        };
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, Sys, args, start.supervisor).await?;
            Ok(actor.get_cell())
        })
    }))
}

/// `mgmt`: the management API actor. Its supervisor is the root, which it
/// needs for `tree` and `restart`.
fn mgmt_spec(shared: Arc<mgmt::Shared>, listen: SocketAddr, slot: MgmtSlot) -> ChildSpec {
    ChildSpec::new("mgmt", move |start: StartCtx| {
        let args = MgmtArgs {
            listen,
            app: AppState {
                shared: shared.clone(),
                root: ActorRef::from(start.supervisor.clone()),
            },
            slot: slot.clone(),
        };
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, Mgmt, args, start.supervisor).await?;
            Ok(actor.get_cell())
        })
    })
}

/// The actors' view of the config.
pub fn broker_config(cfg: &Config) -> BrokerConfig {
    let m = &cfg.mqtt;
    let channel = ChannelConfig {
        max_packet_size: u32::try_from(m.max_packet_size.as_u64()).unwrap_or(u32::MAX),
        max_client_id_len: usize::from(m.max_client_id_len),
        receive_maximum: m.max_inflight,
        max_topic_alias: m.max_topic_alias,
        max_topic_levels: usize::from(m.max_topic_levels),
        max_qos: QoS::from_u8(m.max_qos).unwrap_or(QoS::ExactlyOnce),
        retain_available: m.retain_available,
        wildcard_subscriptions: m.wildcard_subscriptions,
        shared_subscriptions: m.shared_subscriptions,
        subscription_identifiers: m.subscription_identifiers,
        server_keep_alive: (!m.server_keep_alive.is_zero()).then(|| {
            u16::try_from(m.server_keep_alive.as_duration().as_secs()).unwrap_or(u16::MAX)
        }),
        keep_alive_multiplier: m.keep_alive_multiplier,
        max_session_expiry: u32::try_from(m.max_session_expiry.as_duration().as_secs())
            .unwrap_or(u32::MAX),
    };
    BrokerConfig {
        node_name: cfg.node.name.clone(),
        channel,
        session: SessionConfig {
            max_inflight: m.max_inflight,
            max_mqueue_len: m.max_mqueue_len,
            mqueue_store_qos0: m.mqueue_store_qos0,
        },
        max_subscriptions: m.max_subscriptions as usize,
        max_awaiting_rel: m.max_awaiting_rel as usize,
        handshake_timeout: m.handshake_timeout.as_duration(),
        outbound_buffer: m.outbound_buffer.as_usize(),
        inbox_capacity: m.max_mqueue_len.max(1000) + usize::from(m.max_inflight),
        shutdown_timeout: m.shutdown_timeout.as_duration(),
        max_connections: m.max_connections as usize,
        max_publish_delay: m.max_publish_delay.as_duration(),
        max_connection_rate: m.max_connection_rate,
        publish_limits: PublishLimits {
            messages: m.max_publish_rate,
            bytes: m.max_publish_bytes_rate.as_u64(),
        },
        memory_high_watermark: cfg.node.memory_high_watermark.as_u64(),
    }
}

/// A per-start random seed (assigned client ids), without a rand dependency:
/// std's hasher keys are random per process.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
