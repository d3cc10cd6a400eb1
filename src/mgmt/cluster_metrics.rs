//! The cluster's part of `/metrics` (issue #4): members by status, and the
//! exact forwarding counters.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use roost_actors::broker::Counters;
use roost_actors::overload::Evacuation;
use roost_cluster::Cluster;

/// Figures of the cluster layer for one scrape.
#[derive(Debug, Default, Clone)]
pub struct ClusterSnapshot {
    /// Other members by status (`up`, `down`, `joining`); this node is not
    /// counted. `None` if the membership actor did not answer.
    pub members: Option<Vec<(String, u64)>>,
    pub forwarded: u64,
    pub received: u64,
    pub forward_queued: u64,
    pub forward_dropped: u64,
    pub duplicates_skipped: u64,
    pub heartbeat_timeouts: u64,
    pub peers_refused: u64,
    pub sessions_moved_in: u64,
    pub sessions_moved_out: u64,
    pub takeover_timeouts: u64,
    pub retained_caught_up: u64,
    pub partitions_detected: u64,
    pub heals: u64,
    pub heal_restarts: u64,
    pub autocleaned: u64,
    pub sessions_merged_in: u64,
    pub sessions_merged_out: u64,
    pub merge_duplicates_skipped: u64,
    pub redirected_in: u64,
    pub redirected_dropped: u64,
    pub redirected_onward: u64,
    /// 1 while this node is evacuated (from readiness 503 to `stop`).
    pub evacuating: bool,
    pub evacuation_connections_evicted: u64,
    pub evacuation_sessions_migrated: u64,
}

pub async fn snapshot(cluster: &Cluster) -> ClusterSnapshot {
    let shared = &cluster.0;
    let c = &shared.counters;
    let (mut queued, mut dropped) = (0, 0);
    for link in shared.links.read().values() {
        let s = link.mailbox.stats();
        queued += s.memory_messages + s.disk_messages + s.unacked_messages;
        dropped += s.dropped_queue_full;
    }
    let members = cluster.status().await.ok().map(|st| {
        let mut by: Vec<(String, u64)> = ["up", "down", "joining"]
            .iter()
            .map(|s| ((*s).to_owned(), 0))
            .collect();
        for m in st.members.iter().filter(|m| !m.local) {
            if let Some(e) = by.iter_mut().find(|(s, _)| *s == m.status) {
                e.1 += 1;
            }
        }
        by
    });
    ClusterSnapshot {
        members,
        forwarded: Counters::get(&c.forwarded),
        received: Counters::get(&c.received),
        forward_queued: queued,
        forward_dropped: dropped,
        duplicates_skipped: Counters::get(&c.duplicates_skipped),
        heartbeat_timeouts: Counters::get(&c.heartbeat_timeouts),
        peers_refused: Counters::get(&c.peers_refused),
        sessions_moved_in: Counters::get(&shared.takeovers.moved_in),
        sessions_moved_out: Counters::get(&shared.takeovers.moved_out),
        takeover_timeouts: Counters::get(&shared.takeovers.timeouts),
        retained_caught_up: Counters::get(&shared.takeovers.retained_added),
        partitions_detected: Counters::get(&c.partitions_detected),
        heals: Counters::get(&c.heals),
        heal_restarts: Counters::get(&c.heal_restarts),
        autocleaned: Counters::get(&c.autocleaned),
        sessions_merged_in: Counters::get(&c.sessions_merged_in),
        sessions_merged_out: Counters::get(&c.sessions_merged_out),
        merge_duplicates_skipped: Counters::get(&shared.ctx.counters.merge_duplicates_skipped),
        redirected_in: Counters::get(&c.redirected_in),
        redirected_dropped: Counters::get(&c.redirected_dropped),
        redirected_onward: Counters::get(&c.redirected_onward),
        evacuating: shared.ctx.overload.evacuation() != Evacuation::Off,
        evacuation_connections_evicted: Counters::get(&c.evacuation_connections_evicted),
        evacuation_sessions_migrated: Counters::get(&c.evacuation_sessions_migrated),
    }
}

pub fn register(r: &mut Registry, s: &ClusterSnapshot) {
    if let Some(members) = &s.members {
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        for (status, n) in members {
            family
                .get_or_create(&vec![("status".to_owned(), status.clone())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        r.register(
            "cluster_members",
            "Other members of the cluster by status (up, down, joining)",
            family,
        );
    }
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    r.register(
        "evacuation_active",
        "1 while this node is being evacuated (roost ctl evacuation start, until stop)",
        gauge(u64::from(s.evacuating)),
    );
    r.register(
        "cluster_forward_queued",
        "Messages waiting to be forwarded to other nodes (sent and unacknowledged included)",
        gauge(s.forward_queued),
    );
    for (name, help, v) in [
        (
            "cluster_forwarded",
            "Messages forwarded to other nodes",
            s.forwarded,
        ),
        (
            "cluster_received",
            "Messages received from other nodes and published here",
            s.received,
        ),
        (
            "cluster_forward_dropped",
            "Messages for other nodes dropped because a forward queue was full (cluster.forward_buffer)",
            s.forward_dropped,
        ),
        (
            "cluster_duplicates_skipped",
            "Forwarded messages received again after a reconnect and skipped",
            s.duplicates_skipped,
        ),
        (
            "cluster_heartbeat_timeouts",
            "Members marked down for missing heartbeats",
            s.heartbeat_timeouts,
        ),
        (
            "cluster_peers_refused",
            "Links refused: failed authentication (cookie) or another cluster name",
            s.peers_refused,
        ),
        (
            "cluster_sessions_moved_in",
            "Sessions moved here from another node when their client reconnected here",
            s.sessions_moved_in,
        ),
        (
            "cluster_sessions_moved_out",
            "Sessions handed over to another node when their client reconnected there",
            s.sessions_moved_out,
        ),
        (
            "cluster_takeover_timeouts",
            "Peers that did not answer a client-id takeover in time (the connect went on)",
            s.takeover_timeouts,
        ),
        (
            "cluster_retained_caught_up",
            "Retained messages this node did not have and got from a peer when their link came up",
            s.retained_caught_up,
        ),
        (
            "cluster_partitions_detected",
            "Partitions this node noticed: a member down here but up for another, or back without a restart",
            s.partitions_detected,
        ),
        (
            "cluster_heals",
            "Heal rounds this node coordinated that restarted the losing side",
            s.heals,
        ),
        (
            "cluster_heal_restarts",
            "Times this node restarted its cluster subtree because it was on the losing side of a partition",
            s.heal_restarts,
        ),
        (
            "cluster_autocleaned",
            "Members removed because they were down longer than cluster.autoclean",
            s.autocleaned,
        ),
        (
            "cluster_sessions_merged_in",
            "Older sessions of a client from another node merged into this node's (both held one)",
            s.sessions_merged_in,
        ),
        (
            "cluster_sessions_merged_out",
            "Sessions of this node handed to another node that held a newer one of the same client, or moved there by an evacuation",
            s.sessions_merged_out,
        ),
        (
            "evacuation_connections_evicted",
            "Clients disconnected (0x9C, use another server) by evacuations of this node",
            s.evacuation_connections_evicted,
        ),
        (
            "evacuation_sessions_migrated",
            "Sessions moved to other nodes by evacuations of this node",
            s.evacuation_sessions_migrated,
        ),
        (
            "cluster_merge_duplicates_skipped",
            "Messages of a merged-in session that the session here had already (same message identity), skipped",
            s.merge_duplicates_skipped,
        ),
        (
            "cluster_redirected",
            "Messages another node still routed for a client after its session moved here, delivered to it",
            s.redirected_in,
        ),
        (
            "cluster_redirected_dropped",
            "Such messages dropped because too many waited for the session to be installed here",
            s.redirected_dropped,
        ),
        (
            "cluster_redirected_onward",
            "Such messages whose session had moved on from here, sent on along this node's own redirect",
            s.redirected_onward,
        ),
    ] {
        r.register(name, help, ConstCounter::new(v));
    }
}
