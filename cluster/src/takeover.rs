//! Client ids unique cluster-wide, and sessions that follow their client
//! to another node (issue #4).
//!
//! When a client connects, its connection asks every up peer, in parallel,
//! to give up that client ([`ClusterSessions::take_over`], called before the
//! local registry opens the session). Each peer's `takeover` actor asks its
//! registry: a session there is discarded (clean start) or handed over
//! (subscriptions, inflight and queued messages), and its connection gets
//! DISCONNECT 0x8E. The asking node installs what moved as the client's
//! session. A peer that does not answer within [`TAKEOVER_TIMEOUT`] is
//! logged (`cluster_takeover_timeout`) and not waited for: the connect goes
//! on with what the others answered, never blocked by a dead peer.
//!
//! Messages published while the session moves (between its routes going on
//! the old node and coming up on the new one) are not in either queue:
//! the window is the route propagation time (milliseconds), documented in
//! docs/ARCHITECTURE.md.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_actors::broker::Counters;
use roost_actors::registry::{RegistryMsg, RemoteSessions, TakeOver, TakeOverFuture};
use roost_actors::session::handover::{HandOverOutcome, HandoverMessage, SessionHandover};
use roost_protocol::ClientId;
use roost_storage::{QueuedMessage, StoredMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::shared::ClusterShared;
use crate::wire;

/// The process group of every node's takeover actor.
pub const TAKEOVER_GROUP: &str = "roost.cluster.takeover";

/// Longest a connect waits for its peers' answers.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What peers send each other.
#[derive(Debug, Serialize, Deserialize)]
pub enum TakeoverWire {
    Request {
        id: u64,
        from: String,
        client: String,
        clean_start: bool,
    },
    Reply {
        id: u64,
        from: String,
        client: String,
        outcome: HandOverOutcome,
    },
    /// `roost ctl clients list` across the cluster: the sessions of the
    /// receiving node whose id contains `pattern`.
    ListClients {
        id: u64,
        from: String,
        pattern: Option<String>,
    },
    Clients {
        id: u64,
        from: String,
        clients: Vec<ClientRow>,
    },
    /// Part of the sender's retained messages, sent when a link comes up:
    /// the receiver keeps those whose topic it has no message for.
    Retained {
        from: String,
        messages: Vec<StoredMessage>,
    },
    /// Part of the sender's sessions, sent when a link comes up: a client
    /// id both nodes hold (a partition, or a node that was down while its
    /// client connected elsewhere) is merged into the newer session.
    Sessions {
        from: String,
        sessions: Vec<SessionStamp>,
    },
    /// The asker got a `Reply` that moved a session, or the receiver of a
    /// `Merge` merged it: the sender may forget its copy.
    Received {
        id: u64,
        from: String,
    },
    /// Please send me your session stamps (`Sessions`): the sender has a
    /// session again that it may share with you.
    SessionsWanted {
        from: String,
    },
    /// Before the sender hands a session over after a link came up: tell
    /// it once what your forward queue to it held now has been delivered
    /// (or after [`FLUSH_LIMIT`]). Messages queued for the sender while it
    /// was away may be for the session it is about to hand over.
    FlushWanted {
        id: u64,
        from: String,
    },
    Flushed {
        id: u64,
        from: String,
    },
    /// The sender's session of `client` was the older: here it is, to
    /// merge into the receiver's (confirmed with `Received`, same id).
    Merge {
        id: u64,
        from: String,
        client: String,
        handover: Box<SessionHandover>,
    },
    /// Piece `index` of `count` of one message encoded whole (postcard,
    /// without the version byte), too large to go at once (see
    /// [`PIECE_BYTES`]). The pieces of one `stream` come in order on one
    /// link; the receiver handles the message once it has them all.
    Piece {
        from: String,
        stream: u64,
        index: u32,
        count: u32,
        bytes: Vec<u8>,
    },
    /// A rebalance coordinator (the sender) asks the receiver
    /// ([`crate::rebalance`]).
    Rebalance {
        id: u64,
        from: String,
        ask: crate::rebalance::RebalanceAsk,
    },
    RebalanceAnswer {
        id: u64,
        from: String,
        answer: Result<crate::rebalance::RebalanceAnswer, String>,
    },
}

/// Largest takeover message sent at once; a larger one (a session handed
/// over with a long queue, a long client listing) goes as pieces of this
/// size. A link carries one message at a time: a 3 MB hand-over on a
/// 64 KiB/s link held back everything behind it for most of a minute, the
/// peer's heartbeats included, and the link was declared down under it
/// again and again. Each piece that arrives counts as a heartbeat
/// (`ClusterShared::heard_from`).
pub const PIECE_BYTES: usize = 32 << 10;

/// Incomplete messages a receiver keeps (pieces of a message whose link
/// dropped mid-way are never completed): the oldest goes past this, and
/// any older than [`PIECES_MAX_AGE`].
const PIECES_MAX_STREAMS: usize = 64;
const PIECES_MAX_AGE: Duration = Duration::from_secs(600);

/// A message arriving in pieces.
pub(crate) struct Assembly {
    next: u32,
    count: u32,
    bytes: Vec<u8>,
    started: std::time::Instant,
}

/// Send `msg` to `remote`: whole, or as [`TakeoverWire::Piece`]s if its
/// encoding is over [`PIECE_BYTES`]. Err: the link is gone.
fn send_wire(
    shared: &ClusterShared,
    remote: &ActorRef<TakeoverMsg>,
    msg: TakeoverWire,
) -> Result<(), ()> {
    let stream = shared.takeovers.next_id.fetch_add(1, Ordering::Relaxed);
    for m in in_pieces(&shared.settings.node_name, stream, msg) {
        remote.cast(TakeoverMsg::Wire(m)).map_err(|_| ())?;
    }
    Ok(())
}

/// `msg` alone, or its [`TakeoverWire::Piece`]s if its encoding is over
/// [`PIECE_BYTES`].
fn in_pieces(me: &str, stream: u64, msg: TakeoverWire) -> Vec<TakeoverWire> {
    let bytes = match postcard::to_stdvec(&msg) {
        Ok(b) if b.len() > PIECE_BYTES => b,
        _ => return vec![msg],
    };
    let count = bytes.len().div_ceil(PIECE_BYTES) as u32;
    bytes
        .chunks(PIECE_BYTES)
        .enumerate()
        .map(|(index, piece)| TakeoverWire::Piece {
            from: me.to_owned(),
            stream,
            index: index as u32,
            count,
            bytes: piece.to_vec(),
        })
        .collect()
}

/// Add a piece; the whole message once it is complete.
fn assemble(
    pieces: &Mutex<HashMap<(String, u64), Assembly>>,
    from: String,
    stream: u64,
    index: u32,
    count: u32,
    bytes: Vec<u8>,
) -> Option<TakeoverWire> {
    let mut pieces = pieces.lock();
    pieces.retain(|_, a| a.started.elapsed() < PIECES_MAX_AGE);
    let key = (from, stream);
    if index == 0 {
        while pieces.len() >= PIECES_MAX_STREAMS {
            let oldest = pieces
                .iter()
                .min_by_key(|(_, a)| a.started)
                .map(|(k, _)| k.clone())?;
            warn!(peer = %oldest.0, stream = oldest.1, "cluster_pieces_dropped: too many incomplete messages");
            pieces.remove(&oldest);
        }
        pieces.insert(
            key.clone(),
            Assembly {
                next: 0,
                count,
                bytes: Vec::with_capacity(count as usize * PIECE_BYTES),
                started: std::time::Instant::now(),
            },
        );
    }
    let a = pieces.get_mut(&key)?;
    if a.next != index || a.count != count {
        // Out of order: cannot happen on one link; drop it whole.
        warn!(peer = %key.0, stream, index, "cluster_piece_out_of_order");
        pieces.remove(&key);
        return None;
    }
    a.bytes.extend_from_slice(&bytes);
    a.next += 1;
    if a.next < a.count {
        return None;
    }
    let a = pieces.remove(&key)?;
    match postcard::from_bytes::<TakeoverWire>(&a.bytes) {
        Ok(TakeoverWire::Piece { .. }) | Err(_) => {
            warn!(peer = %key.0, stream, len = a.bytes.len(), "cluster_pieces_undecodable");
            None
        }
        Ok(w) => Some(w),
    }
}

/// One session, as link-up reconciliation compares them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStamp {
    pub client_id: String,
    pub connected: bool,
    /// When its connection came (connected) or went (offline), ms since
    /// the Unix epoch.
    pub since_ms: u64,
}

/// Whether session `a` on `a_node` is newer than `b` on `b_node`: a
/// connected session beats an offline one, then the later connection (or
/// disconnection) wins, then the larger node name (any fixed rule: both
/// nodes must pick the same).
pub fn newer(a: &SessionStamp, a_node: &str, b: &SessionStamp, b_node: &str) -> bool {
    (a.connected, a.since_ms, a_node) > (b.connected, b.since_ms, b_node)
}

/// Session stamps per `Sessions` message.
const SESSIONS_CHUNK: usize = 2000;

/// Send this node's sessions to `peer` (its link just came up), in
/// chunks, off the caller's actor. Both sides do; each hands over its
/// sessions that lose to the other's ([`newer`]).
pub fn reconcile_sessions(shared: &Arc<ClusterShared>, peer: &str) {
    let shared = shared.clone();
    let peer = peer.to_owned();
    tokio::spawn(async move {
        if resolve_takeover(&shared, &peer).await.is_some() {
            resend_pending_moves(&shared, &peer);
        }
        let infos = match roost_actors::registry::session_infos(&shared.ctx).await {
            Ok(i) => i,
            Err(e) => {
                warn!(peer = %peer, error = %e, "cluster_sessions_not_reconciled");
                return;
            }
        };
        if infos.is_empty() {
            return;
        }
        let Some(remote) = resolve_takeover(&shared, &peer).await else {
            warn!(peer = %peer, "cluster_sessions_not_reconciled_peer_unresolved");
            return;
        };
        let stamps: Vec<SessionStamp> = infos
            .into_iter()
            .map(|i| SessionStamp {
                client_id: i.client_id.to_string(),
                connected: i.connected,
                since_ms: i.since_ms,
            })
            .collect();
        for chunk in stamps.chunks(SESSIONS_CHUNK) {
            let msg = TakeoverWire::Sessions {
                from: shared.settings.node_name.clone(),
                sessions: chunk.to_vec(),
            };
            if remote.cast(TakeoverMsg::Wire(msg)).is_err() {
                return;
            }
        }
    });
}

/// A session this node handed over, kept until the asker confirms it got it
/// ([`TakeoverWire::Received`]): a reply can be lost with its link (a heal
/// restarts the cluster subtree, a peer dies, heartbeats starve behind a
/// large hand-over on a slow link and the link is closed).
pub struct PendingMove {
    pub client: String,
    pub handover: Box<SessionHandover>,
    pub since: std::time::Instant,
    /// When it was last sent.
    pub sent: std::time::Instant,
    /// The peer's takeover actor it was last sent to: the link it went on
    /// (a new link has a new remote actor id).
    pub via: Option<ractor::ActorId>,
}

/// Marks the ids of [`TakeoverWire::Merge`]s (this node's own counter),
/// apart from the askers' takeover request ids in `pending_moves`.
const MERGE_ID: u64 = 1 << 63;

/// A moved session not confirmed within this is sent again, as a `Merge`
/// with the same id (the receiver merges each id once), if its peer is up
/// on another link than the one it went on (also done as soon as a link
/// comes up); taken back here when the peer is down then, or after
/// [`MOVE_GIVE_UP`].
const MOVE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const MOVE_GIVE_UP: Duration = Duration::from_secs(60);
/// While the link it went on stays up, a hand-over is on its way (a link
/// delivers in order or drops): it is not sent again (a copy queued behind
/// the first on a slow link only doubles the wait), and taken back only
/// after this long.
const MOVE_SAME_LINK_LIMIT: Duration = Duration::from_secs(600);
/// How long a receiver remembers a hand-over it merged.
const RECEIVED_MEMORY: Duration = Duration::from_secs(600);

/// Send the unconfirmed hand-overs to `peer` again (its link just came
/// up: the first may have been lost with the old one).
fn resend_pending_moves(shared: &Arc<ClusterShared>, peer: &str) {
    let Some(remote) = remote_takeover(shared, peer) else {
        return;
    };
    let now = std::time::Instant::now();
    let via = Some(remote.get_id());
    let again: Vec<(u64, String, Box<SessionHandover>)> = shared
        .pending_moves
        .lock()
        .iter_mut()
        .filter(|((p, _), m)| p == peer && m.via != via)
        .map(|((_, id), m)| {
            m.sent = now;
            m.via = via;
            (*id, m.client.clone(), m.handover.clone())
        })
        .collect();
    for (id, client, handover) in again {
        info!(client_id = %client, peer = %peer, messages = handover.messages.len(), "cluster_session_move_resent");
        let merge = TakeoverWire::Merge {
            id,
            from: shared.settings.node_name.clone(),
            client,
            handover,
        };
        let _ = send_wire(shared, &remote, merge);
    }
}

/// Whether the hand-over `id` of `from` is new here (and now recorded).
fn first_receipt(shared: &ClusterShared, from: &str, id: u64) -> bool {
    let mut got = shared.received_moves.lock();
    got.insert((from.to_owned(), id), std::time::Instant::now())
        .is_none()
}

/// Confirm hand-over `id` to `from`.
fn confirm_receipt(shared: &ClusterShared, from: &str, id: u64) {
    if let Some(r) = remote_takeover(shared, from) {
        let _ = r.cast(TakeoverMsg::Wire(TakeoverWire::Received {
            id,
            from: shared.settings.node_name.clone(),
        }));
    }
}

/// Send again the sessions handed over and not confirmed whose peer is up;
/// take back those whose peer is down (or that waited too long): each
/// becomes this node's session again (merged if the client reconnected
/// here), and every up peer is asked for its sessions so a newer one
/// elsewhere gets it merged in. Called periodically (the partition
/// supervisor's tick).
pub fn keep_unconfirmed_moves(shared: &Arc<ClusterShared>) {
    shared
        .received_moves
        .lock()
        .retain(|_, at| at.elapsed() < RECEIVED_MEMORY);
    let up: HashSet<String> = shared.up_peer_names().into_iter().collect();
    let mut resend: HashSet<String> = HashSet::new();
    let expired: Vec<PendingMove> = {
        let mut pending = shared.pending_moves.lock();
        if pending.is_empty() {
            return;
        }
        let mut keys: Vec<(String, u64)> = Vec::new();
        for ((peer, id), m) in pending.iter() {
            if m.sent.elapsed() <= MOVE_CONFIRM_TIMEOUT {
                continue;
            }
            let link = up
                .contains(peer)
                .then(|| remote_takeover(shared, peer).map(|r| r.get_id()))
                .flatten();
            match link {
                // Still on its way on the link it went on.
                Some(l) if m.via == Some(l) && m.since.elapsed() < MOVE_SAME_LINK_LIMIT => {}
                // The link it went on dropped since: send it again.
                Some(l) if m.via != Some(l) && m.since.elapsed() < MOVE_GIVE_UP => {
                    resend.insert(peer.clone());
                }
                _ => keys.push((peer.clone(), *id)),
            }
        }
        keys.iter().filter_map(|k| pending.remove(k)).collect()
    };
    for peer in &resend {
        resend_pending_moves(shared, peer);
    }
    if expired.is_empty() {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        for m in expired {
            let n = m.handover.messages.len();
            let r = absorb_here(&shared, &m.client, m.handover).await;
            Counters::inc(&shared.takeovers.unconfirmed_kept);
            warn!(client_id = %m.client, messages = n, kept = ?r, "cluster_session_move_unconfirmed_kept_here");
        }
        for peer in shared.up_peer_names() {
            reconcile_sessions(&shared, &peer);
            if let Some(r) = remote_takeover(&shared, &peer) {
                let _ = r.cast(TakeoverMsg::Wire(TakeoverWire::SessionsWanted {
                    from: shared.settings.node_name.clone(),
                }));
            }
        }
    });
}

/// Most redirected messages waiting here for one client's session.
const REDIRECTED_MAX: usize = 10_000;
/// How long redirected messages wait for their client's session to be
/// installed here (its connect is finishing) before they go to the store
/// as an offline session's.
const REDIRECTED_WAIT: Duration = Duration::from_secs(5);

/// A message another node's router sent for `client` after its session
/// moved here: queued per client, in order, and handed to the session as
/// soon as it exists (the takeover reply and these messages travel on
/// different links, either may come first).
pub fn redirected(shared: &Arc<ClusterShared>, client: &str, m: QueuedMessage) {
    let start = {
        let mut waiting = shared.redirected.lock();
        let q = waiting.entry(client.to_owned()).or_default();
        if q.len() >= REDIRECTED_MAX {
            Counters::inc(&shared.counters.redirected_dropped);
            warn!(client_id = %client, "cluster_redirected_dropped: too many waiting for the session");
            return;
        }
        q.push_back(m);
        q.len() == 1
    };
    if start {
        tokio::spawn(deliver_redirected(shared.clone(), client.to_owned()));
    }
}

/// Hand `client`'s redirected messages to its session until none wait.
async fn deliver_redirected(shared: Arc<ClusterShared>, client: String) {
    let id = ClientId::new(client.as_str());
    let deadline = tokio::time::Instant::now() + REDIRECTED_WAIT;
    loop {
        let batch: Vec<QueuedMessage> = {
            let mut waiting = shared.redirected.lock();
            match waiting.get_mut(&client) {
                Some(q) if !q.is_empty() => q.drain(..).collect(),
                _ => {
                    waiting.remove(&client);
                    return;
                }
            }
        };
        let n = batch.len() as u64;
        let Some(registry) = shared.ctx.registry() else {
            return;
        };
        let give = |messages| {
            let client = id.clone();
            |reply| RegistryMsg::Redirected {
                client,
                messages,
                reply,
            }
        };
        match ractor::call_t!(registry, give(batch.clone()), 10_000) {
            Ok(Some(_)) => {
                Counters::add(&shared.counters.redirected_in, n);
                continue;
            }
            Ok(None) if follow_redirect(&shared, &id, &batch) => {
                Counters::add(&shared.counters.redirected_onward, n);
                debug!(client_id = %client, messages = n, "cluster_redirected_onward");
            }
            Ok(None) if tokio::time::Instant::now() < deadline => {
                // Not installed yet: put them back in front, try again.
                {
                    let mut waiting = shared.redirected.lock();
                    let q = waiting.entry(client.clone()).or_default();
                    for m in batch.into_iter().rev() {
                        q.push_front(m);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => {
                // No session came: keep them as an offline session's
                // queue (a takeover that failed), never drop them silently.
                let handover = Box::new(SessionHandover {
                    record: offline_record(),
                    messages: batch.into_iter().map(HandoverMessage::queued).collect(),
                });
                let r = absorb_here(&shared, &client, handover).await;
                warn!(client_id = %client, messages = n, kept = ?r, "cluster_redirected_without_session");
            }
        }
    }
}

/// Redirected messages for `client` came here, and its session is not
/// here: if it moved on from here (this node redirects it), they follow it
/// there. Without that, a message redirected here just after the session
/// left made an offline session of its own here (no subscriptions) that a
/// reconnecting client resumed, never subscribing again.
fn follow_redirect(shared: &ClusterShared, client: &ClientId, batch: &[QueuedMessage]) -> bool {
    let Some(sink) = shared.ctx.routes.client_redirect(client) else {
        return false;
    };
    let (now, now_ms) = (std::time::Instant::now(), roost_actors::broker::unix_ms());
    for q in batch {
        let msg = Arc::new(
            q.message
                .clone()
                .into_message(now, now_ms)
                .with_id(q.id.into()),
        );
        sink.offer_to(client, &msg, q.delivery.clone().into(), false);
    }
    true
}

/// Merge `handover` into this node's session of `client`, or install it as
/// this node's session if there is none: how many messages were kept.
async fn absorb_here(
    shared: &ClusterShared,
    client: &str,
    handover: Box<SessionHandover>,
) -> Result<usize, String> {
    let registry = shared
        .ctx
        .registry()
        .ok_or_else(|| "the session registry is not running".to_owned())?;
    let kept = ractor::call_t!(
        registry,
        |reply| RegistryMsg::Absorb {
            client: ClientId::new(client),
            handover,
            reply,
        },
        10_000
    )
    .map_err(|e| e.to_string())?;
    // The session is here now: nothing of it is elsewhere to follow. A
    // redirect left from when it moved away earlier would send what routes
    // here for it to a node that no longer holds it.
    drop(shared.ctx.routes.take_redirects(&ClientId::new(client)));
    Ok(kept)
}

/// The record of an offline session made only to keep redirected messages
/// whose session never came: no subscriptions, an hour to reconnect.
fn offline_record() -> roost_storage::SessionRecord {
    roost_storage::SessionRecord {
        protocol: roost_storage::StoredProtocol::V5,
        subscriptions: Vec::new(),
        expiry_interval_secs: 3600,
        disconnected_at_ms: None,
        will: None,
        awaiting_pubrel: Vec::new(),
    }
}

/// Longest a peer waits for its forward queue to this node to deliver
/// what it held when asked ([`TakeoverWire::FlushWanted`]).
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Longest a [`forward_barrier`] waits, peers that drop and come back
/// included: before a merge, and before a takeover's hand-over (within
/// the asker's [`TAKEOVER_TIMEOUT`]; a hand-over after it still reaches
/// the asker, merged into the session its connect made).
const BARRIER_LIMIT: Duration = Duration::from_secs(15);
const TAKEOVER_BARRIER_LIMIT: Duration = Duration::from_secs(3);

/// Wait until every up peer delivered what its forward queue to this node
/// held when asked (bounded): the messages published for a session here
/// while this node was away or cut off, before the others knew where its
/// client went. A peer whose link drops meanwhile (a heal restarts this
/// node's cluster subtree) is asked again once it is back: its queue still
/// holds those messages, and handing the session over without them would
/// lose them here.
async fn forward_barrier(shared: &ClusterShared, limit: Duration) {
    let me = shared.settings.node_name.clone();
    let deadline = tokio::time::Instant::now() + limit;
    let mut waiting: HashSet<String> = shared.up_peer_names().into_iter().collect();
    while !waiting.is_empty() {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let peers: Vec<(String, ActorRef<TakeoverMsg>)> = up_peers(shared)
            .into_iter()
            .filter(|(n, _)| waiting.contains(n))
            .collect();
        if peers.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let limit = (FLUSH_LIMIT + Duration::from_secs(1)).min(deadline - now);
        let got = ask_peers(shared, peers, &shared.takeovers.flushes, limit, |id| {
            TakeoverWire::FlushWanted {
                id,
                from: me.clone(),
            }
        })
        .await;
        if got.answers.is_empty() {
            // Nobody answered (their links dropped meanwhile): not again
            // at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (peer, ()) in got.answers {
            waiting.remove(&peer);
        }
    }
    if !waiting.is_empty() {
        let mut peers: Vec<String> = waiting.into_iter().collect();
        peers.sort();
        warn!(?peers, "cluster_forward_barrier_incomplete");
    }
}

/// Answer a [`TakeoverWire::FlushWanted`] of `peer` once the entries our
/// queue to it holds now are acknowledged (or dropped), or the queue is
/// empty, or after [`FLUSH_LIMIT`].
async fn flushed_to(shared: &ClusterShared, peer: &str) {
    let Some(link) = shared.link(peer) else {
        return;
    };
    let target = link.mailbox.stats().pushed;
    let deadline = tokio::time::Instant::now() + FLUSH_LIMIT;
    loop {
        let s = link.mailbox.stats();
        let settled = s.acked + s.dropped_queue_full + s.dropped_expired + s.dropped_store_error;
        let empty = s.memory_messages + s.disk_messages + s.unacked_messages == 0;
        if empty || settled >= target || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `peer`'s sessions arrived: hand ours that are older over to it.
async fn merge_older(shared: Arc<ClusterShared>, peer: String, theirs: Vec<SessionStamp>) {
    let infos = match roost_actors::registry::session_infos(&shared.ctx).await {
        Ok(i) => i,
        Err(e) => {
            warn!(peer = %peer, error = %e, "cluster_sessions_not_reconciled");
            return;
        }
    };
    let me = shared.settings.node_name.clone();
    let ours: HashMap<String, SessionStamp> = infos
        .into_iter()
        .map(|i| {
            let id = i.client_id.to_string();
            let stamp = SessionStamp {
                client_id: id.clone(),
                connected: i.connected,
                since_ms: i.since_ms,
            };
            (id, stamp)
        })
        .collect();
    let older: Vec<SessionStamp> = theirs
        .into_iter()
        .filter(|t| {
            ours.get(&t.client_id)
                .is_some_and(|o| newer(t, &peer, o, &me))
        })
        .collect();
    if older.is_empty() {
        return;
    }
    // The other links of the same return come up meanwhile; then what the
    // peers queued for this node while it was away lands in the sessions
    // before they move.
    tokio::time::sleep(shared.settings.heartbeat_interval).await;
    forward_barrier(&shared, BARRIER_LIMIT).await;
    for t in older {
        // Ours is the older: it ends here (its connection, if any, gets
        // DISCONNECT 0x8E) and its messages go to the newer one. What the
        // peers routed here for it before the newer one subscribed and the
        // barrier did not see arrive (a slow or flapping link) follows it
        // there; the newer session skips what it got itself (it watches for
        // twins since it was made with this node unreached).
        move_session(&shared, &t.client_id, &peer, "older").await;
    }
}

/// What [`move_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMove {
    /// Handed over to the peer (kept here until it confirms receipt):
    /// with this many messages.
    Sent(usize),
    /// This node has no session of the client (any more).
    NotHere,
    /// The peer went away meanwhile: the session stays here.
    KeptHere,
}

/// Move this node's session of `client` to `peer`: its connection, if
/// any, is closed (0x8E), the session is handed over as a `Merge` (merged
/// into the peer's session of the client, or installed there if it has
/// none), kept until the peer confirms it and taken back if it does not
/// (see [`PendingMove`]). What still routes here for the client follows it
/// there. `why`: logged (`older`: a link-up merge; `evacuation`).
pub async fn move_session(
    shared: &Arc<ClusterShared>,
    client: &str,
    peer: &str,
    why: &'static str,
) -> SessionMove {
    let HandOverOutcome::Moved(handover) = hand_over_local(shared, client, false, Some(peer)).await
    else {
        return SessionMove::NotHere;
    };
    let n = handover.messages.len();
    let Some(remote) = resolve_takeover(shared, peer).await else {
        // Gone meanwhile: the session stays here after all.
        let r = absorb_here(shared, client, handover).await;
        warn!(client_id = %client, peer = %peer, messages = n, kept = ?r, why, "cluster_session_merge_undeliverable_kept_here");
        return SessionMove::KeptHere;
    };
    // Kept until the peer confirms it (`Received`), taken back after
    // MOVE_CONFIRM_TIMEOUT: the cast is lost if the link drops now.
    let id = MERGE_ID | shared.takeovers.next_id.fetch_add(1, Ordering::Relaxed);
    shared.pending_moves.lock().insert(
        (peer.to_owned(), id),
        PendingMove {
            client: client.to_owned(),
            handover: handover.clone(),
            since: std::time::Instant::now(),
            sent: std::time::Instant::now(),
            via: Some(remote.get_id()),
        },
    );
    Counters::inc(&shared.counters.sessions_merged_out);
    info!(client_id = %client, to = %peer, messages = n, why, "cluster_session_merged_away");
    let merge = TakeoverWire::Merge {
        id,
        from: shared.settings.node_name.clone(),
        client: client.to_owned(),
        handover,
    };
    let _ = send_wire(shared, &remote, merge);
    SessionMove::Sent(n)
}

/// Retained messages per `Retained` message.
const RETAINED_CHUNK: usize = 500;

/// Send this node's retained messages to `peer` (its link just came up,
/// and this node has been running longer: the membership only calls it
/// then), in chunks, off the caller's actor. A node that joins later, or
/// was away, gets what was retained meanwhile; a topic it already has
/// keeps its message. A node that was away never sends its own: what it
/// kept may have been deleted or replaced elsewhere meanwhile, and would
/// come back. Its own stale copies stay local (there is no timestamp to
/// order them yet).
pub fn send_retained(shared: &Arc<ClusterShared>, peer: &str) {
    let shared = shared.clone();
    let peer = peer.to_owned();
    tokio::spawn(async move {
        let (now, now_ms) = (std::time::Instant::now(), roost_actors::broker::unix_ms());
        let all = shared.ctx.retained.all();
        let messages: Vec<StoredMessage> = all
            .iter()
            .filter(|m| !m.is_expired(now))
            .map(|m| StoredMessage::from_message(m, now, now_ms))
            .collect();
        if messages.is_empty() {
            return;
        }
        let Some(remote) = resolve_takeover(&shared, &peer).await else {
            warn!(peer = %peer, "cluster_retained_not_sent_peer_unresolved");
            return;
        };
        let n = messages.len();
        let mut it = messages.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<StoredMessage> = it.by_ref().take(RETAINED_CHUNK).collect();
            let msg = TakeoverWire::Retained {
                from: shared.settings.node_name.clone(),
                messages: chunk,
            };
            if remote.cast(TakeoverMsg::Wire(msg)).is_err() {
                return;
            }
        }
        debug!(peer = %peer, messages = n, "cluster_retained_sent");
    });
}

/// One session as another node lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRow {
    pub client_id: String,
    pub connected: bool,
    pub subscriptions: u64,
    pub inflight: u64,
    pub queued: u64,
}

/// The sessions of this node whose client id contains `pattern`.
pub async fn local_clients(
    ctx: &roost_actors::broker::BrokerCtx,
    pattern: Option<&str>,
) -> Result<Vec<ClientRow>, String> {
    let infos = roost_actors::registry::session_infos(ctx).await?;
    Ok(infos
        .into_iter()
        .filter(|s| pattern.is_none_or(|p| s.client_id.as_str().contains(p)))
        .map(|s| ClientRow {
            client_id: s.client_id.to_string(),
            connected: s.connected,
            subscriptions: s.subscriptions.len() as u64,
            inflight: s.inflight as u64,
            queued: s.queued as u64,
        })
        .collect())
}

/// What the up peers answered to a cluster-wide listing.
#[derive(Debug, Default)]
pub struct RemoteClients {
    /// (node, session), by node.
    pub clients: Vec<(String, ClientRow)>,
    /// Up peers that did not answer in time.
    pub silent: Vec<String>,
}

/// Longest a cluster-wide listing waits for its peers.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// The sessions of every up peer (not this node's), whose client id
/// contains `pattern`.
pub async fn remote_clients(shared: &Arc<ClusterShared>, pattern: Option<String>) -> RemoteClients {
    let me = shared.settings.node_name.clone();
    let asked = ask_all(shared, &shared.takeovers.lists, LIST_TIMEOUT, |id| {
        TakeoverWire::ListClients {
            id,
            from: me.clone(),
            pattern: pattern.clone(),
        }
    })
    .await;
    if !asked.silent.is_empty() {
        warn!(peers = ?asked.silent, "cluster_clients_list_incomplete");
    }
    let mut clients: Vec<(String, ClientRow)> = asked
        .answers
        .into_iter()
        .flat_map(|(node, rows)| rows.into_iter().map(move |r| (node.clone(), r)))
        .collect();
    clients.sort_by(|a, b| (&a.0, &a.1.client_id).cmp(&(&b.0, &b.1.client_id)));
    RemoteClients {
        clients,
        silent: asked.silent,
    }
}

/// Ask `peers` for a rebalance (see [`crate::rebalance`]): their answers,
/// and the peers that did not answer within `limit` (or are not up).
pub async fn ask_rebalance(
    shared: &ClusterShared,
    peers: &[String],
    ask: crate::rebalance::RebalanceAsk,
    limit: Duration,
) -> (
    Vec<(String, Result<crate::rebalance::RebalanceAnswer, String>)>,
    Vec<String>,
) {
    let mut unreachable = Vec::new();
    let mut targets = Vec::new();
    for p in peers {
        match remote_takeover(shared, p) {
            Some(r) => targets.push((p.clone(), r)),
            None => unreachable.push(p.clone()),
        }
    }
    let me = shared.settings.node_name.clone();
    let got = ask_peers(shared, targets, &shared.takeovers.rebalances, limit, |id| {
        TakeoverWire::Rebalance {
            id,
            from: me.clone(),
            ask: ask.clone(),
        }
    })
    .await;
    unreachable.extend(got.silent);
    (got.answers, unreachable)
}

/// Up peers with their takeover actor.
fn up_peers(shared: &ClusterShared) -> Vec<(String, ActorRef<TakeoverMsg>)> {
    shared
        .up_peer_names()
        .into_iter()
        .filter_map(|n| remote_takeover(shared, &n).map(|r| (n, r)))
        .collect()
}

pub enum TakeoverMsg {
    Wire(TakeoverWire),
}

impl ractor::Message for TakeoverMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let TakeoverMsg::Wire(w) = self;
        wire::encode(&w)
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        wire::decode(bytes).map(TakeoverMsg::Wire)
    }
}

/// Requests of one kind sent to every up peer, each waiting for their
/// answers: a connect's takeover, a cluster-wide listing.
struct Gatherings<T> {
    pending: Mutex<HashMap<u64, Gathering<T>>>,
}

struct Gathering<T> {
    waiting: HashSet<String>,
    answers: Vec<(String, T)>,
    /// Fired when nobody is left to wait for.
    done: Option<oneshot::Sender<()>>,
}

/// What a gathering got: answers by peer, and the peers that stayed silent.
struct Gathered<T> {
    answers: Vec<(String, T)>,
    silent: Vec<String>,
}

impl<T> Default for Gatherings<T> {
    fn default() -> Self {
        Gatherings {
            pending: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Gatherings<T> {
    /// `from` answered request `id`; the answer back if nobody waits for it
    /// any more (it came too late).
    fn answer(&self, id: u64, from: &str, answer: T) -> Result<(), T> {
        let mut pending = self.pending.lock();
        let Some(g) = pending.get_mut(&id) else {
            return Err(answer);
        };
        if !g.waiting.remove(from) {
            return Err(answer);
        }
        g.answers.push((from.to_owned(), answer));
        Self::fire_if_done(g);
        Ok(())
    }

    /// Stop waiting for `peers` (unreachable, or gone down).
    fn forget(&self, id: u64, peers: &[String]) {
        if let Some(g) = self.pending.lock().get_mut(&id) {
            for p in peers {
                g.waiting.remove(p);
            }
            Self::fire_if_done(g);
        }
    }

    fn fire_if_done(g: &mut Gathering<T>) {
        if g.waiting.is_empty() {
            if let Some(tx) = g.done.take() {
                let _ = tx.send(());
            }
        }
    }

    fn waiting(&self, id: u64) -> Vec<String> {
        self.pending
            .lock()
            .get(&id)
            .map_or(Vec::new(), |g| g.waiting.iter().cloned().collect())
    }
}

/// Send `request(id)` to every up peer's takeover actor and gather their
/// answers in `gatherings`: until all answered, for at most `limit`. A peer
/// that goes down meanwhile counts as answered with nothing (what it holds
/// is out of reach).
async fn ask_all<T>(
    shared: &ClusterShared,
    gatherings: &Gatherings<T>,
    limit: Duration,
    request: impl Fn(u64) -> TakeoverWire,
) -> Gathered<T> {
    ask_peers(shared, up_peers(shared), gatherings, limit, request).await
}

/// [`ask_all`] for the given peers only.
async fn ask_peers<T>(
    shared: &ClusterShared,
    peers: Vec<(String, ActorRef<TakeoverMsg>)>,
    gatherings: &Gatherings<T>,
    limit: Duration,
    request: impl Fn(u64) -> TakeoverWire,
) -> Gathered<T> {
    if peers.is_empty() {
        return Gathered {
            answers: Vec::new(),
            silent: Vec::new(),
        };
    }
    let id = shared.takeovers.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = oneshot::channel();
    gatherings.pending.lock().insert(
        id,
        Gathering {
            waiting: peers.iter().map(|(n, _)| n.clone()).collect(),
            answers: Vec::new(),
            done: Some(tx),
        },
    );
    for (peer, actor) in &peers {
        if actor.cast(TakeoverMsg::Wire(request(id))).is_err() {
            gatherings.forget(id, std::slice::from_ref(peer));
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let step = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
        match tokio::time::timeout_at(step, &mut rx).await {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => {
                let down: Vec<String> = gatherings
                    .waiting(id)
                    .into_iter()
                    .filter(|n| !shared.link(n).is_some_and(|l| l.up.load(Ordering::Acquire)))
                    .collect();
                gatherings.forget(id, &down);
            }
        }
    }
    let g = gatherings
        .pending
        .lock()
        .remove(&id)
        .expect("inserted above");
    let mut silent: Vec<String> = g.waiting.into_iter().collect();
    silent.sort();
    Gathered {
        answers: g.answers,
        silent,
    }
}

/// The takeovers in progress on this node.
#[derive(Default)]
pub struct Takeovers {
    next_id: AtomicU64,
    takeovers: Gatherings<HandOverOutcome>,
    lists: Gatherings<Vec<ClientRow>>,
    flushes: Gatherings<()>,
    rebalances: Gatherings<Result<crate::rebalance::RebalanceAnswer, String>>,
    /// Sessions that moved here from a peer, and from here to a peer.
    pub moved_in: AtomicU64,
    pub moved_out: AtomicU64,
    /// Peers that did not answer a takeover in time.
    pub timeouts: AtomicU64,
    /// Sessions handed over after that: merged into the session here.
    pub late: AtomicU64,
    /// Sessions handed over, never confirmed, and taken back.
    pub unconfirmed_kept: AtomicU64,
    /// Retained messages this node got from a peer when their link came up.
    pub retained_added: AtomicU64,
    /// Messages arriving in pieces, by sender and stream.
    pieces: Mutex<HashMap<(String, u64), Assembly>>,
}

/// [`remote_takeover`], waiting up to 5 s: a link's remote ends are
/// learned as it comes up.
async fn resolve_takeover(shared: &ClusterShared, peer: &str) -> Option<ActorRef<TakeoverMsg>> {
    for _ in 0..50 {
        if let Some(r) = remote_takeover(shared, peer) {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The peer's takeover actor on the node behind `peer`'s link.
/// Send an answer to `peer`'s takeover actor, if its link is up (an
/// asker that went away meanwhile stops waiting on its own).
fn reply_to(shared: &ClusterShared, peer: &str, reply: TakeoverWire) {
    if let Some(r) = remote_takeover(shared, peer) {
        let _ = send_wire(shared, &r, reply);
    }
}

fn remote_takeover(shared: &ClusterShared, peer: &str) -> Option<ActorRef<TakeoverMsg>> {
    let link = shared.link(peer)?;
    let node_id = link.remote.read().as_ref()?.get_id().node();
    wire::remote_member(TAKEOVER_GROUP, node_id).map(Into::into)
}

/// [`RemoteSessions`] over the cluster.
pub struct ClusterSessions {
    shared: Arc<ClusterShared>,
}

impl RemoteSessions for ClusterSessions {
    fn take_over(&self, client: ClientId, clean_start: bool) -> TakeOverFuture {
        let shared = self.shared.clone();
        Box::pin(async move { take_over(&shared, client, clean_start).await })
    }
}

async fn take_over(shared: &Arc<ClusterShared>, client: ClientId, clean_start: bool) -> TakeOver {
    // It moved away from here earlier and now comes back: stop sending
    // what routes here for it to the node it had moved to (that node hands
    // its session back with the messages).
    let redirects = shared.ctx.routes.take_redirects(&client);
    let t = &shared.takeovers;
    let me = shared.settings.node_name.clone();
    let asked = ask_all(shared, &t.takeovers, TAKEOVER_TIMEOUT, |id| {
        TakeoverWire::Request {
            id,
            from: me.clone(),
            client: client.to_string(),
            clean_start,
        }
    })
    .await;
    if !asked.silent.is_empty() {
        Counters::add(&t.timeouts, asked.silent.len() as u64);
        warn!(client_id = %client, peers = ?asked.silent, timeout = ?TAKEOVER_TIMEOUT, "cluster_takeover_timeout");
    }
    let mut moved = None;
    for (peer, outcome) in asked.answers {
        if let HandOverOutcome::Moved(h) = outcome {
            if let Some(first) = moved.as_mut() {
                // Two nodes held the client (after a partition): the
                // second one's messages follow the first's.
                let first: &mut Box<SessionHandover> = first;
                warn!(client_id = %client, %peer, messages = h.messages.len(), "cluster_takeover_second_session_merged");
                first
                    .messages
                    .extend(h.into_queued().into_iter().map(HandoverMessage::queued));
            } else {
                moved = Some(h);
            }
        }
    }
    // A member down or cut off now may hold a session of this client that
    // comes back to be merged into this one.
    let unreached = !asked.silent.is_empty()
        || shared
            .links
            .read()
            .values()
            .any(|l| !l.up.load(Ordering::Acquire));
    if moved.is_some() {
        Counters::inc(&t.moved_in);
    } else if unreached && !redirects.is_empty() {
        // The node it had moved to did not answer or is down (a slow
        // link; or the client's CONNECT was read late here, after the
        // client gave up and went there):
        // its session is still there, and what peers routed here for it
        // (a backlog arriving late) must still follow it. The session
        // made here watches for twins and is merged with it later.
        debug!(client_id = %client, "cluster_takeover_redirect_kept");
        shared.ctx.routes.restore_redirects(redirects);
    }
    TakeOver {
        handover: moved,
        unreached,
    }
}

pub struct Takeover;

pub struct TakeoverArgs {
    pub shared: Arc<ClusterShared>,
}

impl Actor for Takeover {
    type Msg = TakeoverMsg;
    type State = Arc<ClusterShared>;
    type Arguments = TakeoverArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TakeoverMsg>,
        args: TakeoverArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(TAKEOVER_GROUP.to_string(), vec![myself.get_cell()]);
        let shared = args.shared;
        *shared.ctx.remote_sessions.write() = Some(Arc::new(ClusterSessions {
            shared: shared.clone(),
        }));
        Ok(shared)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TakeoverMsg>,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        *shared.ctx.remote_sessions.write() = None;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<TakeoverMsg>,
        TakeoverMsg::Wire(msg): TakeoverMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let msg = match msg {
            TakeoverWire::Piece {
                from,
                stream,
                index,
                count,
                bytes,
            } => {
                shared.heard_from(&from);
                match assemble(&shared.takeovers.pieces, from, stream, index, count, bytes) {
                    Some(whole) => whole,
                    None => return Ok(()),
                }
            }
            whole => whole,
        };
        match msg {
            // Assembled above (`assemble` gives no piece).
            TakeoverWire::Piece { .. } => {}
            TakeoverWire::Reply {
                id,
                from,
                client,
                outcome,
            } => {
                if matches!(outcome, HandOverOutcome::Moved(_)) {
                    confirm_receipt(shared, &from, id);
                    if !first_receipt(shared, &from, id) {
                        // Sent again as a Merge and merged already.
                        return Ok(());
                    }
                }
                if let Err(HandOverOutcome::Moved(handover)) =
                    shared.takeovers.takeovers.answer(id, &from, outcome)
                {
                    // Too late: the connect went on without it (a frozen
                    // peer answered after TAKEOVER_TIMEOUT). The session
                    // ended there: merge it into the one here, as after a
                    // partition, rather than lose it.
                    Counters::inc(&shared.takeovers.late);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let n = handover.messages.len();
                        let r = absorb_here(&shared, &client, handover).await;
                        warn!(client_id = %client, peer = %from, messages = n, kept = ?r, "cluster_takeover_late_session_merged");
                    });
                }
            }
            TakeoverWire::Clients { id, from, clients } => {
                let _ = shared.takeovers.lists.answer(id, &from, clients);
            }
            TakeoverWire::RebalanceAnswer { id, from, answer } => {
                let _ = shared.takeovers.rebalances.answer(id, &from, answer);
            }
            TakeoverWire::Rebalance { id, from, ask } => {
                // Off this actor: a load count asks every session.
                let shared = shared.clone();
                tokio::spawn(async move {
                    let answer = crate::rebalance::answer(&shared, &from, ask).await;
                    let reply = TakeoverWire::RebalanceAnswer {
                        id,
                        from: shared.settings.node_name.clone(),
                        answer,
                    };
                    reply_to(&shared, &from, reply);
                });
            }
            TakeoverWire::Retained { from, messages } => {
                let (now, now_ms) = (std::time::Instant::now(), roost_actors::broker::unix_ms());
                let mut added = 0u64;
                for m in messages {
                    let msg = Arc::new(m.into_message(now, now_ms));
                    if !msg.is_expired(now) && shared.ctx.retained.apply_if_absent(&msg) {
                        added += 1;
                    }
                }
                if added > 0 {
                    Counters::add(&shared.takeovers.retained_added, added);
                    info!(peer = %from, added, "cluster_retained_caught_up");
                }
            }
            TakeoverWire::Received { id, from } => {
                shared.pending_moves.lock().remove(&(from, id));
            }
            TakeoverWire::SessionsWanted { from } => reconcile_sessions(shared, &from),
            TakeoverWire::Sessions { from, sessions } => {
                tokio::spawn(merge_older(shared.clone(), from, sessions));
            }
            TakeoverWire::FlushWanted { id, from } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    flushed_to(&shared, &from).await;
                    if let Some(r) = remote_takeover(&shared, &from) {
                        let reply = TakeoverWire::Flushed {
                            id,
                            from: shared.settings.node_name.clone(),
                        };
                        let _ = r.cast(TakeoverMsg::Wire(reply));
                    }
                });
            }
            TakeoverWire::Flushed { id, from } => {
                let _ = shared.takeovers.flushes.answer(id, &from, ());
            }
            TakeoverWire::Merge {
                id,
                from,
                client,
                handover,
            } => {
                if !first_receipt(shared, &from, id) {
                    // Sent again: its first copy was merged already.
                    confirm_receipt(shared, &from, id);
                    return Ok(());
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    let n = handover.messages.len();
                    match absorb_here(&shared, &client, handover).await {
                        Ok(kept) => {
                            Counters::inc(&shared.counters.sessions_merged_in);
                            info!(client_id = %client, from = %from, messages = n, kept, "cluster_session_merged_in");
                            confirm_receipt(&shared, &from, id);
                        }
                        Err(e) => {
                            // Not merged: a copy sent again may be.
                            shared.received_moves.lock().remove(&(from.clone(), id));
                            warn!(client_id = %client, peer = %from, messages = n, error = %e, "cluster_session_merge_lost")
                        }
                    }
                });
            }
            TakeoverWire::ListClients { id, from, pattern } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let clients = local_clients(&shared.ctx, pattern.as_deref())
                        .await
                        .unwrap_or_else(|e| {
                            warn!(peer = %from, error = %e, "cluster_clients_list_failed");
                            Vec::new()
                        });
                    let reply = TakeoverWire::Clients {
                        id,
                        from: shared.settings.node_name.clone(),
                        clients,
                    };
                    reply_to(&shared, &from, reply);
                });
            }
            TakeoverWire::Request {
                id,
                from,
                client,
                clean_start,
            } => {
                // Off this actor: the session's answer may take a while, and
                // other requests must not wait behind it.
                let shared = shared.clone();
                tokio::spawn(async move {
                    // What the peers queued for this node may be for this
                    // session (this node was away, or just back): delivered
                    // into it before it moves, or lost here once it left.
                    if !clean_start && has_session(&shared, &client).await {
                        forward_barrier(&shared, TAKEOVER_BARRIER_LIMIT).await;
                    }
                    let outcome = hand_over_local(&shared, &client, clean_start, Some(&from)).await;
                    if let HandOverOutcome::Moved(h) = &outcome {
                        shared.pending_moves.lock().insert(
                            (from.clone(), id),
                            PendingMove {
                                client: client.clone(),
                                handover: h.clone(),
                                since: std::time::Instant::now(),
                                sent: std::time::Instant::now(),
                                via: remote_takeover(&shared, &from).map(|r| r.get_id()),
                            },
                        );
                    }
                    if matches!(outcome, HandOverOutcome::Moved(_)) {
                        Counters::inc(&shared.takeovers.moved_out);
                        info!(client_id = %client, to = %from, "cluster_session_moved_out");
                    }
                    let reply = TakeoverWire::Reply {
                        id,
                        from: shared.settings.node_name.clone(),
                        client: client.clone(),
                        outcome,
                    };
                    match remote_takeover(&shared, &from) {
                        Some(r) => {
                            let _ = send_wire(&shared, &r, reply);
                        }
                        None => {
                            warn!(client_id = %client, peer = %from, "cluster_takeover_reply_undeliverable")
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// Whether a session that moves leaves a redirect on this node (see
/// `RouteTable::add_redirect`): what still routes here for the client in
/// the seconds its routes take to follow goes to its new node. On. A
/// redirected message the new node's own routes (or its origin's local
/// routing) also delivered is a second copy of the same message identity,
/// which the moved session skips (`SessionMsg::WatchTwins`, sent when a
/// session moves in). Without the redirect, a message routed here in the
/// milliseconds of a move is lost (stale-peer-restart lost 2 to 4 a run).
const REDIRECT_ON_MOVE: bool = true;

/// Whether this node holds a session of `client`.
async fn has_session(shared: &ClusterShared, client: &str) -> bool {
    let Some(registry) = shared.ctx.registry() else {
        return false;
    };
    let client = ClientId::new(client);
    ractor::call_t!(registry, |r| RegistryMsg::Lookup(client, r), 2_000)
        .ok()
        .flatten()
        .is_some()
}

/// Ask the registry to give `client` up: discard it (clean start) or hand
/// it over. `to`: the node it moves to (or is merged into), where what
/// still routes here for it goes (`RouteTable::add_redirect`).
async fn hand_over_local(
    shared: &ClusterShared,
    client: &str,
    clean_start: bool,
    to: Option<&str>,
) -> HandOverOutcome {
    let Some(registry) = shared.ctx.registry() else {
        return HandOverOutcome::NotHere;
    };
    let client = ClientId::new(client);
    let redirect = to
        .filter(|_| REDIRECT_ON_MOVE && !clean_start)
        .and_then(|to| shared.link(to))
        .map(|link| {
            Arc::new(crate::forward::ClientSink {
                target: crate::forward::sink_name(&link.peer),
                sink: crate::forward::PeerSink { link },
            }) as Arc<dyn roost_actors::router::ClientRedirect>
        });
    let ms = (TAKEOVER_TIMEOUT.as_millis() as u64) * 4 / 5;
    ractor::call_t!(
        registry,
        |reply| RegistryMsg::HandOver {
            client,
            clean_start,
            redirect,
            reply,
        },
        ms
    )
    .unwrap_or(HandOverOutcome::NotHere)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(connected: bool, since_ms: u64) -> SessionStamp {
        SessionStamp {
            client_id: "c".into(),
            connected,
            since_ms,
        }
    }

    fn stamps(n: usize) -> TakeoverWire {
        TakeoverWire::Sessions {
            from: "n1@h".into(),
            sessions: (0..n)
                .map(|i| SessionStamp {
                    client_id: format!("client-{i}"),
                    connected: i % 2 == 0,
                    since_ms: i as u64,
                })
                .collect(),
        }
    }

    fn feed(
        pieces: &Mutex<HashMap<(String, u64), Assembly>>,
        msgs: Vec<TakeoverWire>,
    ) -> Vec<TakeoverWire> {
        let mut whole = Vec::new();
        for m in msgs {
            let TakeoverWire::Piece {
                from,
                stream,
                index,
                count,
                bytes,
            } = m
            else {
                whole.push(m);
                continue;
            };
            whole.extend(assemble(pieces, from, stream, index, count, bytes));
        }
        whole
    }

    #[test]
    fn a_large_message_goes_in_pieces_and_comes_out_whole() {
        let pieces = Mutex::new(HashMap::new());
        let big = stamps(10_000);
        let encoded = postcard::to_stdvec(&big).unwrap();
        let sent = in_pieces("n1@h", 7, big);
        assert_eq!(sent.len(), encoded.len().div_ceil(PIECE_BYTES));
        assert!(sent.len() > 2, "{} pieces", sent.len());
        for p in &sent {
            let TakeoverWire::Piece { bytes, .. } = p else {
                panic!("not a piece: {p:?}");
            };
            assert!(bytes.len() <= PIECE_BYTES);
        }
        let got = feed(&pieces, sent);
        assert_eq!(got.len(), 1);
        assert_eq!(postcard::to_stdvec(&got[0]).unwrap(), encoded);
        assert!(pieces.lock().is_empty());
        // A small one goes whole.
        let small = in_pieces("n1@h", 8, stamps(3));
        assert!(matches!(small.as_slice(), [TakeoverWire::Sessions { .. }]));
    }

    #[test]
    fn pieces_cut_off_by_a_dropped_link_are_not_assembled_and_the_resend_is() {
        let pieces = Mutex::new(HashMap::new());
        let big = stamps(10_000);
        let encoded = postcard::to_stdvec(&big).unwrap();
        let first = in_pieces("n1@h", 1, stamps(10_000));
        let n = first.len();
        // The link dropped after half of the first copy.
        let cut: Vec<TakeoverWire> = first.into_iter().take(n / 2).collect();
        assert!(feed(&pieces, cut).is_empty());
        // A piece out of order drops its stream.
        let mut again = in_pieces("n1@h", 2, stamps(10_000));
        again.remove(1);
        assert!(feed(&pieces, again).is_empty());
        // The copy sent again on the new link comes out whole.
        let got = feed(&pieces, in_pieces("n1@h", 3, big));
        assert_eq!(got.len(), 1);
        assert_eq!(postcard::to_stdvec(&got[0]).unwrap(), encoded);
        // Only the stream cut off is left, until it ages out.
        assert_eq!(pieces.lock().len(), 1);
    }

    #[test]
    fn the_newest_connection_wins_and_both_nodes_agree() {
        let cases = [
            // (a, b, a wins)
            (stamp(true, 10), stamp(false, 99), true),
            (stamp(true, 20), stamp(true, 10), true),
            (stamp(false, 20), stamp(false, 10), true),
            (stamp(true, 10), stamp(true, 10), false), // a@1 < b@2: b wins
        ];
        for (a, b, a_wins) in cases {
            assert_eq!(newer(&a, "a@1", &b, "b@2"), a_wins, "{a:?} vs {b:?}");
            // Exactly one side considers itself the older.
            assert_ne!(newer(&a, "a@1", &b, "b@2"), newer(&b, "b@2", &a, "a@1"));
        }
    }
}
