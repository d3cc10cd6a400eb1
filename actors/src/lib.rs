//! roost-actors: the broker's supervised actors.
//!
//! Purpose: everything that runs: the OTP-style [`supervisor`], the TCP
//! [`listener`] and its [`connection`] actors, the [`registry`] of client
//! sessions and the [`session`] actors it supervises, the [`router`] (route
//! table writer), the [`retainer`], the [`storage_owner`] and the node's
//! [`alarms`]; overload protection ([`overload`], [`rate_limit`]); the
//! [`overflow`] mailbox (bounded memory, spill to the store in order) that
//! the [`bridge`] actors (issue #6) use and cross-node forwarding will; the
//! [`valve`] that lets a non-session consumer (a cluster peer) pause
//! publishers.
//!
//! Must not depend on: RocksDB (only `roost-storage` names it), global
//! configuration (every actor takes its config by value at spawn, through
//! [`broker::BrokerCtx`]).
//!
//! Supervision subtree built from these actors (see `roost::node`):
//! ```text
//! storage          owner of the durable store (roost-storage)
//! broker (rest_for_one)
//! ├── router       route table writer; readers share the table
//! ├── retainer     retained-message upkeep
//! └── sessions     client registry + session supervisor (temporary children)
//! bridges (one_for_one)
//! └── <name>       one bridge actor per configured bridge (MQTT egress)
//! alarms           memory high watermark (new connections refused above it)
//! listeners (one_for_one)
//! └── tcp:default  listener; connection actors are its temporary children
//! ```
//!
//! Invariants: connection and session message types are local-only (never
//! serialized); every queue on the publish path is bounded (reader batches,
//! session inbox, session queue, outbound buffer) and what it drops is counted.

pub mod alarms;
pub mod bridge;
pub mod broker;
pub mod connection;
pub mod inbox;
pub mod listener;
pub mod outbound;
pub mod overflow;
pub mod overload;
pub mod rate_limit;
pub mod registry;
pub mod retainer;
pub mod router;
pub mod session;
pub mod storage_owner;
pub mod supervisor;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod valve;

/// Aborts a spawned task when dropped: a task owned by an actor's state
/// ends with the actor, also when the actor panicked.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
