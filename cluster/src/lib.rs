//! roost-cluster: Roost nodes as one broker, on ractor_cluster (issue #4).
//!
//! The `cluster` subtree of a node:
//! - `cluster/forwarder`: drains each peer's forward queue to that peer
//!   ([`forward`]);
//! - `cluster/ingress`: publishes what peers forward to local sessions
//!   ([`forward`]);
//! - `cluster/takeover`: client ids unique cluster-wide; a session follows
//!   its client to the node it reconnects to ([`takeover`]);
//! - `cluster/partition`: partition detection, autoheal and autoclean
//!   ([`partition`], with the pure heal planner in [`heal`]);
//! - `cluster/membership`: the transport (ractor_cluster's NodeServer, a
//!   linked child), heartbeats, reconnection, discovery, the persisted
//!   member list, route replication, join/leave ([`membership`]).
//!
//! Only the membership, ingress and takeover actors have network-serializable
//! message types ([`wire`]); every per-client actor stays local-only.

pub mod discovery;
pub mod evacuation;
pub mod forward;
pub mod heal;
pub mod membership;
pub mod partition;
pub mod rebalance;
pub mod settings;
pub mod shared;
pub mod takeover;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use roost_actors::supervisor::{
    child_spec_supervisor, ChildSpec, Intensity, Restart, Strategy, SupervisorArgs,
};

pub use settings::ClusterSettings;
pub use shared::{Cluster, ClusterShared, ClusterStatus, MemberStatus};

/// The `cluster` supervisor and its children. The forwarder starts first so
/// the membership actor can point new links at it.
pub fn cluster_spec(shared: Arc<ClusterShared>) -> ChildSpec {
    let (s1, s2, s3, s4, s5) = (
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared,
    );
    let children = vec![
        ChildSpec::for_actor("forwarder", move || {
            (
                forward::Forwarder,
                forward::ForwarderArgs { shared: s1.clone() },
            )
        }),
        ChildSpec::for_actor("ingress", move || {
            (
                forward::Ingress,
                forward::IngressArgs { shared: s2.clone() },
            )
        }),
        ChildSpec::for_actor("takeover", move || {
            (
                takeover::Takeover,
                takeover::TakeoverArgs { shared: s3.clone() },
            )
        }),
        ChildSpec::for_actor("partition", move || {
            (
                partition::Partition,
                partition::PartitionArgs { shared: s4.clone() },
            )
        }),
        ChildSpec::for_actor("membership", move || {
            (
                membership::Membership,
                membership::MembershipArgs { shared: s5.clone() },
            )
        }),
    ];
    let args = move || SupervisorArgs {
        path: String::new(),
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 10,
            period: Duration::from_secs(30),
        },
        children: children.clone(),
    };
    child_spec_supervisor("cluster", args, Restart::Permanent)
}

/// The `evacuation` actor (a child of the root, after `cluster`: it moves
/// sessions through the cluster's links, and a heal's restart of `cluster`
/// must not restart a running evacuation).
pub fn evacuation_spec(shared: Arc<ClusterShared>) -> ChildSpec {
    ChildSpec::for_actor("evacuation", move || {
        (
            evacuation::Evacuator,
            evacuation::EvacuatorArgs {
                shared: shared.clone(),
            },
        )
    })
}
