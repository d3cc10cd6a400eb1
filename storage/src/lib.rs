//! roost-storage: Roost's durable state (issue #3) in RocksDB: persistent
//! sessions, their queued and inflight messages, retained messages.
//!
//! # Rules of this crate
//! - **The only crate that names RocksDB.** Nothing RocksDB-typed leaves it,
//!   not even in errors ([`EngineError`] is opaque). All RocksDB calls are in
//!   `engine/rocks.rs`.
//! - Depends on `roost-protocol` for [`ClientId`] and for the conversions in
//!   `convert.rs` only; must not depend on tokio, ractor or any actor, and
//!   reads no global config: [`StorageOptions`] comes in by value.
//! - Two engines, one semantics: [`Storage::open`] (RocksDB) and
//!   [`Storage::in_memory`] (ordered maps, for fast actor tests) share all
//!   the logic above a four-operation key-value interface (`engine/mod.rs`),
//!   and the same behaviour suite runs against both.
//! - Never a panic and never a silent loss on data read from disk: a record
//!   that fails to decode is logged (`storage_corrupt_record`, with its
//!   column family and key), counted ([`StorageStats::corrupt_records`]),
//!   and skipped by the loads, and left on disk for an operator.
//!
//! # Format versioning
//! Every value is one format byte ([`FORMAT_V2`] since queued messages
//! carry their message's identity; [`FORMAT_V1`] values are still read)
//! then a postcard-encoded
//! record from `record.rs`; those types *are* the on-disk format (postcard
//! has no field names): changing one means a new format version with its own
//! decoder (see `record.rs`). A record with a newer format byte is refused
//! with [`StorageError::NewerFormat`], never misread and never skipped. The
//! store itself carries a marker (key `roost.store` in the default column
//! family) whose format byte is checked at open: a data dir written by a
//! newer Roost is refused before anything is read; a V1 store's marker is
//! rewritten as V2 when opened. Key layouts are in
//! `keys.rs`.
//!
//! # Invariants
//! - A session's queue is ordered by seq (assigned at commit, increasing,
//!   starting at 1, consecutive within one append); a reader never sees seq
//!   N+1 before seq N.
//! - A queue never outlives its session: [`Batch::delete_session`] deletes
//!   the queue in the same atomic write, and an append to a client with no
//!   stored session is refused ([`AppendOutcome::NoSession`]).
//! - A FIFO queue (`bridge_queues`) is ordered by seq (assigned at commit,
//!   consecutive, from 1); its meta (`next_seq`, `first_seq`, `len`,
//!   `bytes` = the sum of payload lengths) is written in the same batch as
//!   every change to it, so [`Storage::queue_stats`] always matches the
//!   entries.
//! - A [`Batch`] is atomic: after a crash all of its writes are there or
//!   none is. With `sync = false` (the default) a committed batch survives a
//!   `kill -9` of the process (it is in the write-ahead log), not
//!   necessarily a power loss; `sync = true` fsyncs before `commit` returns.
//!
//! # Use by the broker
//! - Open once at node start ([`Storage::open`]); give clones to the
//!   session actors and the retainer. The dir's `LOCK` is released when the
//!   last clone is dropped, so a restarted storage owner must not reopen
//!   while old clones live. Failures to open are for the operator:
//!   [`StorageError::Locked`] (another node on this dir),
//!   [`StorageError::Corrupt`] (with `quarantine_corrupt`, the dir is moved
//!   aside by [`Storage::quarantine`] and the node starts empty),
//!   [`StorageError::NewerFormat`].
//! - At start: [`Storage::load_sessions`] (expire those whose
//!   `disconnected_at_ms + expiry` passed: [`Storage::delete_session`]),
//!   [`Storage::load_retained`].
//! - Publish to persistent subscribers: one [`Batch`] with an
//!   [`Batch::append`] per offline/persistent subscriber (plus the
//!   publisher's QoS 2 state, if any), one [`Storage::commit`], then the
//!   PUBACK/PUBREC.
//! - A session pages its queue in with [`Storage::page`] (bounded memory),
//!   records sends with [`Batch::set_inflight`], and acknowledgements with
//!   [`Batch::remove`]. Everything but appends to a queue must come from the
//!   session's owner (one actor per client id).
//! - Every call blocks the calling thread: use `spawn_blocking` or a
//!   dedicated thread from async code. Commits are serialised by one lock
//!   (that is what orders seqs), so batch writes rather than committing one
//!   message at a time, especially with `sync = true`.
//! - Clean sessions never touch the store.
//! - Overflow mailboxes (bridges) keep named FIFO queues in
//!   `bridge_queues` (`fifo.rs`): [`Batch::queue_push`],
//!   [`Storage::queue_page`], [`Batch::queue_remove_through`] once the
//!   downstream acknowledged, [`Batch::queue_drop_oldest`] for a byte cap,
//!   [`Storage::queue_stats`], [`Batch::queue_clear`]. Only the queue's
//!   owner writes it (the mailbox, under its own lock).

mod batch;
mod convert;
mod engine;
mod error;
mod fifo;
mod keys;
mod quarantine;
mod reads;
mod record;
mod storage;
#[cfg(feature = "test-support")]
pub mod test_support;

#[cfg(test)]
mod tests;

pub use batch::{AppendOutcome, Batch, CommitReceipt};
pub use error::{BoxError, EngineError, RecordError, Result, StorageError};
pub use fifo::{FifoEntry, FifoPage, FifoRemoval, FifoStats};
pub use keys::ColumnFamily;
pub use reads::{Page, QueueEntry};
pub use record::{
    DeliveryRecord, FifoItem, ForwardedProperties, InflightStage, InflightState, QueuedMessage,
    SessionRecord, StoredMessage, StoredMessageId, StoredProtocol, StoredQos, StoredRetainHandling,
    StoredSubscription, StoredSubscriptionOptions, StoredWill, FORMAT_V1, FORMAT_V2,
    SUPPORTED_FORMAT,
};
pub use roost_protocol::ClientId;
pub use storage::{CorruptRecord, Storage, StorageOptions, StorageStats};
