//! The TCP listener actor (`listeners/tcp:<name>`): accepts sockets and is
//! the parent of one connection actor per socket (temporary children: a
//! connection that ends or crashes is never restarted; its client
//! reconnects).
//!
//! Overload protection at accept: the accept rate (`max_connection_rate`),
//! `max_connections` and the memory alarm; refused sockets are answered by
//! [`crate::overload::Refusals`], never by a connection actor.
//!
//! A crash of one connection is counted and logged here and touches nothing
//! else. A crash of the listener itself stops its connections (ractor stops
//! linked children with their parent) and its supervisor restarts it, bound
//! to the same address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use roost_protocol::packet::reason;
use tokio::net::TcpListener;
use tracing::{info, warn, Instrument};

use crate::broker::{BrokerCtx, Counters};
use crate::connection::{Connection, ConnectionArgs, ConnectionMsg, LiveCount};
use crate::overload::{Evacuation, Refusal, Refusals};
use crate::rate_limit::{tokio_now, AcceptLimiter};
use crate::AbortOnDrop;

pub struct Listener;

pub struct ListenerArgs {
    /// e.g. "tcp:default".
    pub name: String,
    pub addr: SocketAddr,
    pub ctx: Arc<BrokerCtx>,
}

pub enum ListenerMsg {
    LocalAddr(RpcReplyPort<SocketAddr>),
    /// Live connection actors.
    ConnectionCount(RpcReplyPort<usize>),
    /// Stop accepting, close every connection with "server shutting down"
    /// (0x8B), and answer once they are gone or the timeout passed.
    Drain(Duration, RpcReplyPort<usize>),
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for ListenerMsg {}

pub struct ListenerState {
    local_addr: SocketAddr,
    accept: Option<AbortOnDrop>,
    ctx: Arc<BrokerCtx>,
}

impl Actor for Listener {
    type Msg = ListenerMsg;
    type State = ListenerState;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ListenerMsg>,
        args: ListenerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let socket = TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot listen on {} ({}): {e}", args.addr, args.name))?;
        let local_addr = socket.local_addr()?;
        info!(listener = %args.name, addr = %local_addr, "listener_started");
        let span = tracing::info_span!("listener", name = %args.name);
        args.ctx
            .listeners
            .write()
            .insert(args.name.clone(), myself.clone());
        let accept = tokio::spawn(accept_loop(socket, myself, args.ctx.clone()).instrument(span));
        Ok(ListenerState {
            local_addr,
            accept: Some(AbortOnDrop(accept)),
            ctx: args.ctx,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ListenerMsg>,
        msg: ListenerMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ListenerMsg::LocalAddr(reply) => {
                let _ = reply.send(st.local_addr);
            }
            ListenerMsg::ConnectionCount(reply) => {
                let _ = reply.send(myself.get_children().len());
            }
            ListenerMsg::Drain(timeout, reply) => {
                st.accept = None; // aborts the accept loop, closes the socket
                for child in myself.get_children() {
                    let _ = ActorRef::<ConnectionMsg>::from(child)
                        .cast(ConnectionMsg::Kick(reason::SERVER_SHUTTING_DOWN));
                }
                let deadline = Instant::now() + timeout;
                while !myself.get_children().is_empty() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = reply.send(myself.get_children().len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ListenerMsg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Connections are temporary children: log and count, never restart,
        // and never let one connection's end stop the listener (ractor's
        // default handler would).
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            Counters::inc(&st.ctx.counters.connection_actor_failures);
            warn!(actor = %cell.get_id(), error = %err, "connection_failed");
        }
        Ok(())
    }
}

/// Accepts, paces and admits connections. Over the accept rate
/// (`max_connection_rate`) the accepted socket waits before it is served,
/// and the ones behind it wait in the kernel's backlog; over
/// `max_connections`, while the memory alarm is raised, or while the node
/// is evacuated, it is refused with a CONNACK (see [`crate::overload`]) and
/// gets no connection actor.
async fn accept_loop(socket: TcpListener, listener: ActorRef<ListenerMsg>, ctx: Arc<BrokerCtx>) {
    let mut rate = AcceptLimiter::new(ctx.config.max_connection_rate, tokio_now());
    let mut refusals = Refusals::new(ctx.config.handshake_timeout);
    // Logged once per episode, not per refused connection.
    let mut at_max = false;
    // Live connections of this listener: an O(1) check per accept, where
    // counting the actor's children copies them all.
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept_failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        Counters::inc(&ctx.counters.connections_accepted);
        let wait = rate.admit(tokio_now());
        if !wait.is_zero() {
            Counters::inc(&ctx.counters.connections_rate_limited);
            tokio::time::sleep(wait).await;
        }
        let full = live.load(Ordering::Acquire) >= ctx.config.max_connections;
        if full && !at_max {
            warn!(
                max_connections = ctx.config.max_connections,
                "max_connections_reached"
            );
        }
        at_max = full;
        let refusal = if ctx.overload.evacuation() == Evacuation::Refusing {
            Some(Refusal::Evacuating)
        } else if ctx.overload.memory_alarm() {
            Some(Refusal::Memory)
        } else {
            full.then_some(Refusal::MaxConnections)
        };
        if let Some(why) = refusal {
            let server_reference = (why == Refusal::Evacuating)
                .then(|| ctx.overload.server_reference())
                .flatten();
            refusals.refuse(stream, peer, why, server_reference, &ctx.counters);
            continue;
        }
        let args = ConnectionArgs {
            stream,
            peer,
            ctx: ctx.clone(),
            // Counted before the actor runs: the next accept sees it.
            live: LiveCount::new(&live),
        };
        if let Err(e) = Actor::spawn_linked(None, Connection, args, listener.get_cell()).await {
            warn!(%peer, error = %e, "connection_spawn_failed");
        }
    }
}
