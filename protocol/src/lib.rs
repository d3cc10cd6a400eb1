//! roost-protocol: pure MQTT 3.1.1 and 5.0.
//!
//! Purpose: everything about MQTT that can be decided without I/O: the packet
//! model and codec, topic name/filter validation and matching, the
//! subscription trie, the per-connection [`channel::Channel`] state machine and
//! the per-client session bookkeeping ([`session::SessionState`]).
//!
//! Must not depend on: tokio, ractor, RocksDB, any global. Every function here
//! takes its input, the current time and its configuration, and returns new
//! state plus a list of effects for an actor to execute.
//!
//! Invariants:
//! - decoding never panics, whatever the input; malformed input is an error
//!   value carrying the MQTT 5 reason code the connection must close with;
//! - protocol violations are *outputs* (a DISCONNECT or CONNACK with a reason
//!   code), never panics or exceptions.

pub mod codec;
pub mod packet;
pub mod topic;
pub mod trie;

pub use packet::*;
pub mod channel;
pub mod message;
pub mod session;

pub use message::{ClientId, Delivery, DeliveryOpts, Message, MessageId};
