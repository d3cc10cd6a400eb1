//! The client registry: client id -> session actor, and the supervisor of
//! the session actors (EMQX's `emqx_cm` plus its session supervisor).
//!
//! Sessions are its linked children (temporary: a crashed session is not
//! restarted; its client reconnects and gets a fresh one). Being their parent
//! is what makes the map exact: the exit of a session and the removal of its
//! entry (and of its routes) are handled by the same actor, in mailbox
//! order, so a client id never points at a dead session for a later CONNECT
//! (DESIGN.md lists `registry` and `sessions` separately; see
//! docs/ARCHITECTURE.md for why they are one actor here).
//!
//! Opening serializes per node: takeover of a live session, replacement on
//! clean start, creation otherwise.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use roost_protocol::channel::ConnectInfo;
use roost_protocol::packet::reason;
use roost_protocol::ClientId;
use roost_storage::{AppendOutcome, QueuedMessage, SessionRecord};
use tracing::{debug, info, warn};

use crate::broker::{BrokerCtx, Counters};
use crate::connection::ConnectionMsg;
use crate::inbox::Inbox;
use crate::outbound::Outbound;
use crate::router::RouterMsg;
use crate::session::handover::{HandOverOutcome, SessionHandover};
use crate::session::{AttachRequest, Session, SessionArgs, SessionInfo, SessionMsg};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct OpenRequest {
    pub info: ConnectInfo,
    pub conn: ActorRef<ConnectionMsg>,
    pub conn_id: u64,
    pub outbound: Arc<Outbound>,
    /// The client's session, moved here from another node.
    pub handover: Option<Box<SessionHandover>>,
}

/// What [`RemoteSessions::take_over`] found.
#[derive(Default)]
pub struct TakeOver {
    /// The session that moved here, if there was one.
    pub handover: Option<Box<SessionHandover>>,
    /// A node that may hold a session of this client could not be asked,
    /// or did not answer: that session may be merged into this one later
    /// (see `SessionMsg::WatchTwins`).
    pub unreached: bool,
}

/// The future of [`RemoteSessions::take_over`].
pub type TakeOverFuture = Pin<Box<dyn Future<Output = TakeOver> + Send>>;

/// Client ids are unique cluster-wide (the cluster layer implements this;
/// a node without peers has none).
pub trait RemoteSessions: Send + Sync {
    /// `client` connects to this node: end its session on every other
    /// node (its connection there gets DISCONNECT 0x8E). Without clean
    /// start, the session that moved here, if there was one. Bounded in
    /// time: a peer that does not answer is logged and not waited for.
    fn take_over(&self, client: ClientId, clean_start: bool) -> TakeOverFuture;
}

pub struct Opened {
    pub session: ActorRef<SessionMsg>,
    pub session_present: bool,
    pub awaiting_rel: std::collections::HashSet<u16>,
    pub stored: bool,
}

pub enum RegistryMsg {
    Open(Box<OpenRequest>, RpcReplyPort<Result<Opened, String>>),
    /// Number of sessions (online and offline).
    Count(RpcReplyPort<usize>),
    Sessions(RpcReplyPort<Vec<(ClientId, ActorRef<SessionMsg>)>>),
    /// The session actor of one client, if it has one (management API).
    Lookup(ClientId, RpcReplyPort<Option<ActorRef<SessionMsg>>>),
    /// Disconnect a client (admin); false if unknown.
    Kick(ClientId, RpcReplyPort<bool>),
    /// Close every connection with this reason (node shutdown).
    KickAll(u8),
    /// `roost ctl restart sessions/<client id>`: stop the client's session
    /// actor (its connection closes) and start it again from the store if
    /// the session is persistent; a clean session is not restarted (its
    /// children are temporary). `None`: no such client; `Some(restored)`.
    RestartSession(ClientId, RpcReplyPort<Option<bool>>),
    /// Another node takes this client over (it connected there): discard
    /// the session here (clean start) or hand it over.
    HandOver {
        client: ClientId,
        clean_start: bool,
        /// Where what still routes here for it goes meanwhile.
        redirect: Option<Arc<dyn crate::router::ClientRedirect>>,
        reply: RpcReplyPort<HandOverOutcome>,
    },
    /// Another node's session of `client`, older than this node's (both
    /// held one, see [`SessionMsg::Absorb`]): merged into the session here,
    /// or installed as this node's session if it has none any more.
    /// Answers how many messages were kept.
    Absorb {
        client: ClientId,
        handover: Box<SessionHandover>,
        reply: RpcReplyPort<usize>,
    },
    /// Messages for `client` that another node's router sent after the
    /// client's session moved here: into its queue. `None`: no session
    /// here (yet).
    Redirected {
        client: ClientId,
        messages: Vec<QueuedMessage>,
        reply: RpcReplyPort<Option<usize>>,
    },
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for RegistryMsg {}

/// Every session of this node as it reports itself now, by client id. A
/// session that does not answer within 2 s (stopping, busy) is left out.
pub async fn session_infos(ctx: &BrokerCtx) -> Result<Vec<SessionInfo>, String> {
    use futures::StreamExt;
    let registry = ctx
        .registry()
        .ok_or_else(|| "the session registry is not running (restarting?)".to_owned())?;
    let list = ractor::call_t!(
        registry,
        RegistryMsg::Sessions,
        CALL_TIMEOUT.as_millis() as u64
    )
    .map_err(|e| format!("the session registry did not answer: {e}"))?;
    let mut infos: Vec<SessionInfo> = futures::stream::iter(list)
        .map(|(_, actor)| async move { ractor::call_t!(actor, SessionMsg::Info, 2_000).ok() })
        .buffer_unordered(64)
        .filter_map(|info| async move { info })
        .collect()
        .await;
    infos.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(infos)
}

pub struct Registry;

pub struct RegistryArgs {
    pub ctx: Arc<BrokerCtx>,
}

struct Entry {
    actor: ActorRef<SessionMsg>,
}

pub struct RegistryState {
    ctx: Arc<BrokerCtx>,
    sessions: HashMap<ClientId, Entry>,
    by_actor: HashMap<ActorId, ClientId>,
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        *args.ctx.registry.write() = Some(myself.clone());
        let mut st = RegistryState {
            ctx: args.ctx,
            sessions: HashMap::new(),
            by_actor: HashMap::new(),
        };
        // Persistent sessions come back from the store, here rather than at
        // node start: a restarted `sessions` subtree gets them back too.
        st.restore_all(&myself).await;
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Open(req, reply) => {
                let r = st.open(&myself, *req).await;
                let _ = reply.send(r);
            }
            RegistryMsg::Count(reply) => {
                let _ = reply.send(st.sessions.len());
            }
            RegistryMsg::Sessions(reply) => {
                let _ = reply.send(
                    st.sessions
                        .iter()
                        .map(|(c, e)| (c.clone(), e.actor.clone()))
                        .collect(),
                );
            }
            RegistryMsg::Lookup(client, reply) => {
                let _ = reply.send(st.sessions.get(&client).map(|e| e.actor.clone()));
            }
            RegistryMsg::Kick(client, reply) => {
                let found = st.sessions.get(&client).map(|e| {
                    e.actor
                        .cast(SessionMsg::Kick(reason::ADMINISTRATIVE_ACTION))
                });
                let _ = reply.send(found.is_some());
            }
            RegistryMsg::RestartSession(client, reply) => {
                let r = st.restart_session(&myself, client).await;
                let _ = reply.send(r);
            }
            RegistryMsg::HandOver {
                client,
                clean_start,
                redirect,
                reply,
            } => {
                let r = st.hand_over(client, clean_start, redirect).await;
                let _ = reply.send(r);
            }
            RegistryMsg::Absorb {
                client,
                handover,
                reply,
            } => {
                let r = st.absorb(&myself, client, handover).await;
                let _ = reply.send(r);
            }
            RegistryMsg::Redirected {
                client,
                messages,
                reply,
            } => {
                let Some(actor) = st.sessions.get(&client).map(|e| e.actor.clone()) else {
                    let _ = reply.send(None);
                    return Ok(());
                };
                // Off the registry: the session may be busy.
                tokio::spawn(async move {
                    let kept = ractor::call_t!(
                        actor,
                        |r| SessionMsg::Absorb(messages, r),
                        CALL_TIMEOUT.as_millis() as u64
                    );
                    let _ = reply.send(kept.ok());
                });
            }
            RegistryMsg::KickAll(code) => {
                for e in st.sessions.values() {
                    let _ = e.actor.cast(SessionMsg::Kick(code));
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<RegistryMsg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                Counters::inc(&st.ctx.counters.session_actor_failures);
                warn!(actor = %cell.get_id(), error = %err, "session_failed");
                st.session_exited(&cell, true);
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => st.session_exited(&cell, false),
            _ => {}
        }
        Ok(())
    }
}

impl RegistryState {
    async fn open(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        mut req: OpenRequest,
    ) -> Result<Opened, String> {
        let client = req.info.client_id.clone();
        if let Some(handover) = req.handover.take() {
            if self.sessions.contains_key(&client) || req.info.clean_start {
                // Cannot happen while client ids are unique; the session
                // here wins and the moved one is logged.
                warn!(client_id = %client, messages = handover.messages.len(), "handover_ignored_session_exists");
            } else if let Some(record) = self.install_handover(&client, *handover, false) {
                let actor = self.spawn(myself, client, Some(record)).await?;
                return self.attach(&actor, req).await.map_err(|(e, _)| e);
            }
        }
        if let Some(old) = self.sessions.get(&client).map(|e| e.actor.clone()) {
            if req.info.clean_start {
                // [MQTT-3.1.2-4] clean start: the old session is discarded.
                // Wait until its routes are gone before the new one subscribes.
                let _ = ractor::call_t!(
                    old,
                    SessionMsg::Discard,
                    CALL_TIMEOUT.as_millis() as u64,
                    reason::SESSION_TAKEN_OVER
                );
                self.forget(&old.get_cell());
                old.stop(Some("discarded".into()));
            } else {
                match self.attach(&old, req).await {
                    Ok(o) => return Ok(o),
                    Err((e, req)) => {
                        // The session is stopping (expired just now): start afresh.
                        warn!(client_id = %client, error = %e, "attach_failed_new_session");
                        self.forget(&old.get_cell());
                        return self.start_new(myself, *req).await;
                    }
                }
            }
        }
        self.start_new(myself, req).await
    }

    /// Another node takes `client` over.
    async fn hand_over(
        &mut self,
        client: ClientId,
        clean_start: bool,
        redirect: Option<Arc<dyn crate::router::ClientRedirect>>,
    ) -> HandOverOutcome {
        let Some(actor) = self.sessions.get(&client).map(|e| e.actor.clone()) else {
            return HandOverOutcome::NotHere;
        };
        self.forget(&actor.get_cell());
        if clean_start {
            let _ = ractor::call_t!(
                actor,
                SessionMsg::Discard,
                CALL_TIMEOUT.as_millis() as u64,
                reason::SESSION_TAKEN_OVER
            );
            actor.stop(Some("discarded".into()));
            info!(client_id = %client, "session_discarded_for_another_node");
            return HandOverOutcome::Discarded;
        }
        match ractor::call_t!(
            actor,
            |r| SessionMsg::HandOver(redirect, r),
            CALL_TIMEOUT.as_millis() as u64
        ) {
            Ok(h) => HandOverOutcome::Moved(h),
            Err(e) => {
                // Logged and killed: the new node starts the session afresh.
                warn!(client_id = %client, error = %e, "session_handover_failed_killed");
                actor.kill();
                HandOverOutcome::Discarded
            }
        }
    }

    /// See [`RegistryMsg::Absorb`].
    async fn absorb(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        client: ClientId,
        handover: Box<SessionHandover>,
    ) -> usize {
        let n = handover.messages.len();
        if let Some(actor) = self.sessions.get(&client).map(|e| e.actor.clone()) {
            let queued = handover.into_queued();
            return match ractor::call_t!(
                actor,
                |reply| SessionMsg::Absorb(queued, reply),
                CALL_TIMEOUT.as_millis() as u64
            ) {
                Ok(kept) => kept,
                Err(e) => {
                    warn!(client_id = %client, error = %e, messages = n, "session_absorb_failed");
                    0
                }
            };
        }
        // Gone here meanwhile: the other node's session becomes this
        // node's, offline, as a takeover would install it.
        let Some(record) = self.install_handover(&client, *handover, true) else {
            return 0;
        };
        match self.spawn(myself, client.clone(), Some(record)).await {
            Ok(_) => n,
            Err(e) => {
                warn!(client_id = %client, error = %e, "session_restore_failed");
                0
            }
        }
    }

    /// Write a session moved from another node to the store, as a restart
    /// would find it; its record to start the session actor from. Until
    /// the client attaches it never expires (the attach sets its expiry);
    /// `offline`: no client is attaching, it is an offline session whose
    /// expiry counts from now.
    fn install_handover(
        &self,
        client: &ClientId,
        mut h: SessionHandover,
        offline: bool,
    ) -> Option<Box<SessionRecord>> {
        let Some(storage) = self.ctx.storage.as_ref() else {
            warn!(client_id = %client, "handover_without_store_dropped");
            return None;
        };
        if offline {
            h.record.disconnected_at_ms = Some(crate::broker::unix_ms());
        } else {
            h.record.expiry_interval_secs = u32::MAX;
            h.record.disconnected_at_ms = None;
        }
        h.record.will = None;
        let queued: Vec<QueuedMessage> = h.messages.iter().map(|m| m.queued.clone()).collect();
        let mut b = roost_storage::Batch::new();
        b.delete_session(client).put_session(client, &h.record);
        b.append(client, &queued);
        let written = crate::broker::blocking(|| storage.commit(b)).and_then(|receipt| {
            let Some((_, AppendOutcome::Queued(seqs))) = receipt.appends.first() else {
                return Ok(());
            };
            let mut b = roost_storage::Batch::new();
            for (seq, m) in seqs.clone().zip(&h.messages) {
                if let Some(state) = m.inflight {
                    b.set_inflight(client, seq, state);
                }
            }
            crate::broker::blocking(|| storage.commit(b)).map(drop)
        });
        if let Err(e) = written {
            Counters::inc(&self.ctx.counters.storage_errors);
            warn!(client_id = %client, error = %e, "handover_store_failed");
            return None;
        }
        info!(client_id = %client, messages = h.messages.len(), "session_moved_here");
        Some(Box::new(h.record))
    }

    /// Spawn a session actor for every stored session whose expiry has not
    /// passed; delete the others.
    async fn restore_all(&mut self, myself: &ActorRef<RegistryMsg>) {
        let Some(storage) = self.ctx.storage.clone() else {
            return;
        };
        let records = match crate::broker::blocking(|| storage.load_sessions()) {
            Ok(r) => r,
            Err(e) => {
                Counters::inc(&self.ctx.counters.storage_errors);
                warn!(error = %e, "sessions_load_failed");
                return;
            }
        };
        let now_ms = crate::broker::unix_ms();
        let (mut restored, mut expired) = (0usize, 0usize);
        for (client, record) in records {
            if crate::session::record_expired(&record, now_ms) {
                expired += 1;
                if let Err(e) = storage.delete_session(&client) {
                    warn!(client_id = %client, error = %e, "session_delete_failed");
                }
                continue;
            }
            match self
                .spawn(myself, client.clone(), Some(Box::new(record)))
                .await
            {
                Ok(_) => restored += 1,
                Err(e) => warn!(client_id = %client, error = %e, "session_restore_failed"),
            }
        }
        if restored + expired > 0 {
            info!(restored, expired, "sessions_restored");
        }
    }

    async fn restart_session(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        client: ClientId,
    ) -> Option<bool> {
        let old = self.sessions.get(&client)?.actor.clone();
        self.forget(&old.get_cell());
        // Stopped, not ended: no will, and the stored state stays.
        if let Err(e) = old
            .stop_and_wait(Some("restart requested".into()), Some(CALL_TIMEOUT))
            .await
        {
            warn!(client_id = %client, error = %e, "session_stop_timeout");
            old.kill();
        }
        if let Some(router) = self.ctx.router() {
            let c = client.clone();
            let _ = ractor::call_t!(
                router,
                |reply| RouterMsg::RemoveClient {
                    client: c,
                    filters: None,
                    reply: Some(reply),
                },
                CALL_TIMEOUT.as_millis() as u64
            );
        }
        let Some(record) = self.stored_record(&client) else {
            info!(client_id = %client, "session_restarted_clean_ended");
            return Some(false);
        };
        match self.spawn(myself, client.clone(), Some(record)).await {
            Ok(_) => {
                info!(client_id = %client, "session_restarted_from_store");
                Some(true)
            }
            Err(e) => {
                warn!(client_id = %client, error = %e, "session_restore_failed");
                Some(false)
            }
        }
    }

    /// The stored record of `client`, when a CONNECT without clean start
    /// finds no session actor (its actor crashed) but the store has one.
    fn stored_record(&self, client: &ClientId) -> Option<Box<SessionRecord>> {
        let storage = self.ctx.storage.as_ref()?;
        if !storage.has_session(client) {
            return None;
        }
        match crate::broker::blocking(|| storage.load_session(client)) {
            Ok(Some(r)) if !crate::session::record_expired(&r, crate::broker::unix_ms()) => {
                Some(Box::new(r))
            }
            Ok(_) => None,
            Err(e) => {
                warn!(client_id = %client, error = %e, "session_load_failed");
                None
            }
        }
    }

    async fn start_new(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        req: OpenRequest,
    ) -> Result<Opened, String> {
        let client = req.info.client_id.clone();
        let restored = if req.info.clean_start {
            None
        } else {
            self.stored_record(&client)
        };
        let actor = self.spawn(myself, client, restored).await?;
        self.attach(&actor, req).await.map_err(|(e, _)| e)
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        client: ClientId,
        restored: Option<Box<SessionRecord>>,
    ) -> Result<ActorRef<SessionMsg>, String> {
        let slot: Arc<OnceLock<ActorRef<SessionMsg>>> = Arc::new(OnceLock::new());
        let wake = {
            let slot = slot.clone();
            Box::new(move || {
                if let Some(a) = slot.get() {
                    let _ = a.cast(SessionMsg::Drain);
                }
            })
        };
        // Publishers wait for this session past half its queue (see Inbox).
        let high_watermark = self.ctx.config.session.max_mqueue_len / 2;
        let inbox = Arc::new(Inbox::new(
            self.ctx.config.inbox_capacity,
            high_watermark,
            wake,
        ));
        let args = SessionArgs {
            client_id: client.clone(),
            ctx: self.ctx.clone(),
            inbox,
            restored,
        };
        let (actor, _) = Actor::spawn_linked(None, Session, args, myself.get_cell())
            .await
            .map_err(|e| format!("session spawn failed: {e}"))?;
        let _ = slot.set(actor.clone());
        self.by_actor.insert(actor.get_id(), client.clone());
        self.sessions.insert(
            client,
            Entry {
                actor: actor.clone(),
            },
        );
        Ok(actor)
    }

    async fn attach(
        &self,
        actor: &ActorRef<SessionMsg>,
        req: OpenRequest,
    ) -> Result<Opened, (String, Box<OpenRequest>)> {
        let keep = OpenRequest {
            info: req.info.clone(),
            conn: req.conn.clone(),
            conn_id: req.conn_id,
            outbound: req.outbound.clone(),
            handover: None,
        };
        let attach = AttachRequest {
            info: req.info,
            conn: req.conn,
            conn_id: req.conn_id,
            outbound: req.outbound,
        };
        match ractor::call_t!(
            actor,
            SessionMsg::Attach,
            CALL_TIMEOUT.as_millis() as u64,
            Box::new(attach)
        ) {
            Ok(a) => Ok(Opened {
                session: actor.clone(),
                session_present: a.session_present,
                awaiting_rel: a.awaiting_rel,
                stored: a.stored,
            }),
            Err(e) => Err((e.to_string(), Box::new(keep))),
        }
    }

    /// Drop the map entry of this actor, if it is still the current one.
    /// Returns the client id, and whether this actor was its current session.
    fn forget(&mut self, cell: &ActorCell) -> Option<(ClientId, bool)> {
        let client = self.by_actor.remove(&cell.get_id())?;
        let current = self
            .sessions
            .get(&client)
            .is_some_and(|e| e.actor.get_id() == cell.get_id());
        if current {
            self.sessions.remove(&client);
        }
        Some((client, current))
    }

    fn session_exited(&mut self, cell: &ActorCell, failed: bool) {
        let Some((client, current)) = self.forget(cell) else {
            return;
        };
        if failed && current {
            // Its routes: the session could not drop them itself.
            if let Some(router) = self.ctx.router() {
                let _ = router.cast(RouterMsg::RemoveClient {
                    client: client.clone(),
                    filters: None,
                    reply: None,
                });
            }
        }
        debug!(client_id = %client, failed, "session_exited");
    }
}
