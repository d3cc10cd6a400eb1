//! The partition supervisor, `cluster/partition` (issue #5): detects
//! network partitions, heals them, and cleans up members gone for good.
//!
//! **Detection.** Each node remembers the peers that went down for it since
//! the last heal (`went_down`). A partition is
//! - a peer that is down here while an up peer's heartbeat lists it up
//!   (we are cut off from it, it is not dead), or
//! - a peer that comes back with the same cluster epoch it had before it
//!   went down: it kept running, so it was cut off, not restarted.
//!
//! Both log `partition_detected` and count
//! `roost_cluster_partitions_detected_total`.
//!
//! **Autoheal.** A return schedules a heal round after a short settle delay
//! (other links of the same heal come up meanwhile). The round is run by
//! the coordinator: the node with the smallest name among the ones this
//! node reaches; another node that saw a return asks it (`HealWanted`). The
//! coordinator asks every node it reaches for its view (`ViewWanted`): the
//! nodes it saw during the split, i.e. itself and its up peers that did not
//! go down since the last heal. [`crate::heal::plan`] computes the cliques
//! and the winner (the largest clique; a tie goes to the clique holding the
//! node running longest), and the plan goes to every participant
//! (`heal_started`). Every participant forgets the `went_down` of the
//! participants; a loser with `cluster.autoheal` on restarts its `cluster`
//! subtree through the root supervisor. It comes back with a new epoch, so
//! the others see a restart, not a partition: routes are resent from
//! scratch both ways, the winners (older epoch) send it their retained
//! messages, and the sessions both sides hold for one client id are merged
//! into the newer one (`takeover::reconcile_sessions`, on every link up).
//! The coordinator logs `heal_done` when every loser is back.
//!
//! Nothing here wipes data: routes derive from live sessions, the forward
//! queues are in the store, a restart of the cluster subtree does not touch
//! the broker's sessions.
//!
//! **Autoclean.** A member down (or never reached) for longer than
//! `cluster.autoclean` is force-left: removed from this node's member list,
//! and every up peer is told to forget it (`cluster_member_autocleaned`,
//! `roost_cluster_autocleaned_total`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_actors::broker::{unix_ms, Counters};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::heal::{self, HealPlan, NodeView};
use crate::membership::MembershipMsg;
use crate::shared::ClusterShared;
use crate::wire::{self, Control};

/// Between partition supervisors, through the membership actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PartitionWire {
    /// The sender saw a peer come back: please run a heal round.
    HealWanted {
        from: String,
    },
    ViewWanted {
        from: String,
        round: u64,
    },
    View {
        from: String,
        round: u64,
        view: NodeView,
    },
    Plan {
        from: String,
        round: u64,
        plan: HealPlan,
    },
}

/// Local messages (from the membership actor, timers) and peers' wire.
pub enum PartitionMsg {
    PeerUp {
        peer: String,
        epoch: u64,
        incarnation: u64,
    },
    PeerDown {
        peer: String,
        /// Silent for `heartbeat_timeout` (else its link closed).
        timed_out: bool,
    },
    /// Left, force-left or autocleaned: not a member any more.
    PeerRemoved {
        peer: String,
    },
    /// A peer's heartbeat: the peers it sees up.
    Seen {
        from: String,
        up: Vec<String>,
    },
    Wire(PartitionWire),
    Tick,
}

// Local-only: peers' messages arrive as `Control::Partition` through the
// membership actor.
impl ractor::Message for PartitionMsg {}

const TICK: Duration = Duration::from_millis(250);
/// The coordinator waits this long for views.
const ROUND_TIMEOUT: Duration = Duration::from_secs(3);
/// Losers that are not back with a new epoch within this are logged.
const HEAL_DONE_TIMEOUT: Duration = Duration::from_secs(60);
/// A node that asked the coordinator for a round asks again after this if
/// no plan came.
const ASK_AGAIN: Duration = Duration::from_secs(5);

pub struct Partition;

pub struct PartitionArgs {
    pub shared: Arc<ClusterShared>,
}

/// A round this node coordinates.
struct Round {
    id: u64,
    waiting: BTreeSet<String>,
    views: Vec<NodeView>,
    deadline: Instant,
}

/// Losers of a round this node coordinated, not back yet.
struct Restarting {
    round: u64,
    started: Instant,
    losers: BTreeSet<String>,
}

pub struct State {
    shared: Arc<ClusterShared>,
    me: String,
    /// Peers up here, with the epoch and process incarnation of their
    /// current (or last) link.
    up: BTreeSet<String>,
    epochs: HashMap<String, u64>,
    incarnations: HashMap<String, u64>,
    /// Peers that went down here since the last heal.
    went_down: BTreeSet<String>,
    /// Peers down now: since when, and whether for missing heartbeats.
    down: HashMap<String, (Instant, bool)>,
    /// Partition reports of this episode (one `partition_detected` each).
    reported: BTreeSet<String>,
    /// When to start (or ask for) a heal round.
    heal_due: Option<Instant>,
    asked_at: Option<Instant>,
    round: Option<Round>,
    restarting: Option<Restarting>,
    /// First time each member was seen down here (for autoclean, when it
    /// has never been seen at all).
    down_since: HashMap<String, Instant>,
    next_clean: Instant,
}

impl Actor for Partition {
    type Msg = PartitionMsg;
    type State = State;
    type Arguments = PartitionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PartitionMsg>,
        args: PartitionArgs,
    ) -> Result<State, ActorProcessingErr> {
        let shared = args.shared;
        *shared.partition.write() = Some(myself.clone());
        // Restarted alone: the links that are up now are not returns.
        let up = shared.up_peer_names().into_iter().collect();
        myself.send_interval(TICK, || PartitionMsg::Tick);
        Ok(State {
            me: shared.settings.node_name.clone(),
            shared,
            up,
            epochs: HashMap::new(),
            incarnations: HashMap::new(),
            went_down: BTreeSet::new(),
            down: HashMap::new(),
            reported: BTreeSet::new(),
            heal_due: None,
            asked_at: None,
            round: None,
            restarting: None,
            down_since: HashMap::new(),
            next_clean: Instant::now() + Duration::from_secs(1),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PartitionMsg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        *state.shared.partition.write() = None;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<PartitionMsg>,
        msg: PartitionMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PartitionMsg::PeerUp {
                peer,
                epoch,
                incarnation,
            } => state.peer_up(peer, epoch, incarnation),
            PartitionMsg::PeerDown { peer, timed_out } => {
                state.up.remove(&peer);
                state.down.insert(peer.clone(), (Instant::now(), timed_out));
                state.went_down.insert(peer.clone());
                state.down_since.entry(peer).or_insert_with(Instant::now);
            }
            PartitionMsg::PeerRemoved { peer } => {
                state.up.remove(&peer);
                state.went_down.remove(&peer);
                state.down.remove(&peer);
                state.reported.remove(&peer);
                state.epochs.remove(&peer);
                state.down_since.remove(&peer);
            }
            PartitionMsg::Seen { from, up } => state.seen(&from, up),
            PartitionMsg::Wire(w) => state.on_wire(w),
            PartitionMsg::Tick => state.tick().await,
        }
        Ok(())
    }
}

impl State {
    fn settle(&self) -> Duration {
        (self.shared.settings.heartbeat_interval * 2).max(Duration::from_secs(1))
    }

    fn detected(&mut self, peer: &str, why: &str) {
        if self.reported.insert(peer.to_owned()) {
            Counters::inc(&self.shared.counters.partitions_detected);
            warn!(peer = %peer, why, "partition_detected");
        }
    }

    fn peer_up(&mut self, peer: String, epoch: u64, incarnation: u64) {
        self.down_since.remove(&peer);
        self.up.insert(peer.clone());
        let prev = self.epochs.insert(peer.clone(), epoch);
        self.incarnations.insert(peer.clone(), incarnation);
        let down = self.down.remove(&peer);
        if !self.went_down.contains(&peer) {
            return;
        }
        // A link that closed and came straight back (two links crossed
        // at formation, a reset connection) is a blip, not a split: the
        // peer was never out of touch for a heartbeat timeout.
        let blip = down.is_some_and(|(at, timed_out)| {
            !timed_out && at.elapsed() < self.shared.settings.heartbeat_timeout
        });
        if blip && prev == Some(epoch) {
            self.went_down.remove(&peer);
            debug!(peer = %peer, "partition_blip_ignored");
            return;
        }
        if prev == Some(epoch) {
            // It kept running while we could not reach each other.
            self.detected(&peer, "came back without a restart");
            let due = Instant::now() + self.settle();
            self.heal_due = Some(self.heal_due.map_or(due, |d| d.min(due)));
            debug!(peer = %peer, "partition_heal_scheduled");
        } else {
            // Restarted (its process, or its cluster subtree by a heal):
            // it starts from scratch, nothing to reconcile beyond what any
            // link-up does.
            self.went_down.remove(&peer);
            self.reported.remove(&peer);
            if let Some(r) = &mut self.restarting {
                if r.losers.remove(&peer) && r.losers.is_empty() {
                    info!(
                        round = r.round,
                        took_ms = r.started.elapsed().as_millis() as u64,
                        "heal_done"
                    );
                    self.restarting = None;
                }
            }
        }
    }

    fn seen(&mut self, from: &str, up: Vec<String>) {
        for n in up {
            if n != self.me && !self.up.contains(&n) && self.went_down.contains(&n) {
                self.detected(&n, &format!("down here, up for {from}"));
            }
        }
    }

    /// Who coordinates heal rounds, as this node sees it.
    fn coordinator(&self) -> String {
        self.up
            .iter()
            .chain(std::iter::once(&self.me))
            .min()
            .cloned()
            .unwrap_or_else(|| self.me.clone())
    }

    /// What this node reports: itself, and its up peers that stayed up
    /// since the last heal.
    fn view(&self) -> NodeView {
        let mut sees: BTreeSet<String> = self.up.difference(&self.went_down).cloned().collect();
        sees.insert(self.me.clone());
        NodeView {
            node: self.me.clone(),
            incarnation: self.shared.incarnation,
            sees,
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        // Redirects of sessions that moved away (the cluster's part of the
        // route table) end here.
        self.shared.ctx.routes.expire_redirects();
        // Sessions handed over whose arrival was never confirmed.
        crate::takeover::keep_unconfirmed_moves(&self.shared);
        if self.heal_due.is_some_and(|d| now >= d) && self.round.is_none() {
            self.heal_due = None;
            let coordinator = self.coordinator();
            if coordinator == self.me {
                self.start_round();
            } else {
                debug!(%coordinator, "partition_heal_asked");
                self.asked_at = Some(now);
                send(
                    &self.shared,
                    &coordinator,
                    PartitionWire::HealWanted {
                        from: self.me.clone(),
                    },
                );
            }
        }
        // Asked, and no plan came (the coordinator went away, or was not
        // reachable by the time it ran): ask again while returns are open.
        if self
            .asked_at
            .is_some_and(|t| now.duration_since(t) >= ASK_AGAIN)
            && self.heal_due.is_none()
        {
            self.asked_at = None;
            if self.up.iter().any(|p| self.went_down.contains(p)) {
                self.heal_due = Some(now);
            }
        }
        if self.round.as_ref().is_some_and(|r| now >= r.deadline) {
            self.finish_round();
        }
        if let Some(r) = &self.restarting {
            if now.duration_since(r.started) > HEAL_DONE_TIMEOUT {
                warn!(round = r.round, losers = ?r.losers, "heal_incomplete: losers not back with a new epoch");
                self.restarting = None;
            }
        }
        if now >= self.next_clean {
            self.next_clean = now + Duration::from_secs(1);
            self.autoclean().await;
        }
    }

    fn start_round(&mut self) {
        let id = unix_ms();
        let waiting: BTreeSet<String> = self.up.clone();
        info!(round = id, peers = ?waiting, "heal_round");
        for p in &waiting {
            send(
                &self.shared,
                p,
                PartitionWire::ViewWanted {
                    from: self.me.clone(),
                    round: id,
                },
            );
        }
        self.round = Some(Round {
            id,
            waiting,
            views: vec![self.view()],
            deadline: Instant::now() + ROUND_TIMEOUT,
        });
        if self.round.as_ref().is_some_and(|r| r.waiting.is_empty()) {
            self.finish_round();
        }
    }

    fn finish_round(&mut self) {
        let Some(round) = self.round.take() else {
            return;
        };
        if !round.waiting.is_empty() {
            warn!(round = round.id, silent = ?round.waiting, "heal_round_views_missing");
        }
        let plan = heal::plan(&round.views);
        let participants: Vec<String> = plan.cliques.iter().flatten().cloned().collect();
        if plan.is_noop() {
            info!(round = round.id, nodes = ?participants, "heal_not_needed: one clique");
        } else {
            Counters::inc(&self.shared.counters.heals);
            info!(round = round.id, winners = ?plan.winners, losers = ?plan.losers, cliques = ?plan.cliques, "heal_started");
            self.restarting = Some(Restarting {
                round: round.id,
                started: Instant::now(),
                losers: plan.losers.clone(),
            });
        }
        for p in participants.iter().filter(|p| **p != self.me) {
            send(
                &self.shared,
                p,
                PartitionWire::Plan {
                    from: self.me.clone(),
                    round: round.id,
                    plan: plan.clone(),
                },
            );
        }
        self.apply(round.id, &plan);
    }

    fn apply(&mut self, round: u64, plan: &HealPlan) {
        self.asked_at = None;
        for n in plan.cliques.iter().flatten() {
            self.went_down.remove(n);
            self.reported.remove(n);
        }
        if !plan.restarts(&self.me) {
            return;
        }
        if !self.shared.settings.autoheal {
            warn!(round, winners = ?plan.winners, "heal_restart_skipped: cluster.autoheal is off; \
                `roost ctl restart cluster` on this node resyncs it with the winners");
            return;
        }
        Counters::inc(&self.shared.counters.heal_restarts);
        warn!(round, winners = ?plan.winners, "heal_restarting_cluster: this node is on the losing side");
        let root = self.shared.root.read().clone();
        tokio::spawn(async move {
            // The plan goes out to the others first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(root) = root else {
                warn!("heal_restart_failed: no root supervisor");
                return;
            };
            if let Err(e) = roost_actors::supervisor::restart_path(&root, "cluster").await {
                warn!(error = %e, "heal_restart_failed");
            }
        });
    }

    fn on_wire(&mut self, w: PartitionWire) {
        match w {
            PartitionWire::HealWanted { from } => {
                debug!(peer = %from, "partition_heal_wanted");
                if self.round.is_none() {
                    let due = Instant::now() + Duration::from_millis(300);
                    self.heal_due = Some(self.heal_due.map_or(due, |d| d.min(due)));
                }
            }
            PartitionWire::ViewWanted { from, round } => {
                send(
                    &self.shared,
                    &from,
                    PartitionWire::View {
                        from: self.me.clone(),
                        round,
                        view: self.view(),
                    },
                );
            }
            PartitionWire::View { from, round, view } => {
                let Some(r) = self.round.as_mut().filter(|r| r.id == round) else {
                    return;
                };
                if r.waiting.remove(&from) && view.node == from {
                    r.views.push(view);
                }
                if r.waiting.is_empty() {
                    self.finish_round();
                }
            }
            PartitionWire::Plan { from, round, plan } => {
                info!(coordinator = %from, round, winners = ?plan.winners, losers = ?plan.losers, "heal_plan_received");
                self.apply(round, &plan);
            }
        }
    }

    /// Force-leave the members down for longer than `cluster.autoclean`.
    async fn autoclean(&mut self) {
        let Some(limit) = self.shared.settings.autoclean else {
            return;
        };
        let Some(membership) = self.shared.membership.read().clone() else {
            return;
        };
        let Ok(status) = ractor::call_t!(membership, MembershipMsg::Status, 2_000) else {
            return;
        };
        let now_ms = unix_ms();
        let mut gone: BTreeMap<String, u64> = BTreeMap::new();
        for m in status
            .members
            .iter()
            .filter(|m| !m.local && m.status != "up")
        {
            let since = self
                .down_since
                .entry(m.node.clone())
                .or_insert_with(Instant::now);
            let down_ms = if m.last_seen_ms > 0 {
                now_ms.saturating_sub(m.last_seen_ms)
            } else {
                since.elapsed().as_millis() as u64
            };
            if down_ms > limit.as_millis() as u64 {
                gone.insert(m.node.clone(), down_ms);
            }
        }
        for (node, down_ms) in gone {
            let r = ractor::call_t!(
                membership,
                |reply| MembershipMsg::ForceLeave {
                    node: node.clone(),
                    force: true,
                    reply,
                },
                2_000
            );
            match r {
                Ok(Ok(())) => {
                    Counters::inc(&self.shared.counters.autocleaned);
                    warn!(%node, down_s = down_ms / 1000, limit = ?limit, "cluster_member_autocleaned");
                    self.down_since.remove(&node);
                }
                Ok(Err(e)) => debug!(%node, error = %e, "cluster_autoclean_skipped"),
                Err(e) => debug!(%node, error = %e, "cluster_autoclean_failed"),
            }
        }
    }
}

/// Send `w` to `peer`'s partition supervisor (through its membership actor).
fn send(shared: &ClusterShared, peer: &str, w: PartitionWire) {
    let Some(link) = shared.link(peer) else {
        return;
    };
    let Some(node_id) = link.remote.read().as_ref().map(|r| r.get_id().node()) else {
        return;
    };
    if let Some(control) = wire::remote_member(wire::CONTROL_GROUP, node_id) {
        let control: ActorRef<MembershipMsg> = control.into();
        let _ = control.cast(MembershipMsg::Wire(Control::Partition(w)));
    }
}
