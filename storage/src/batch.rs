//! [`Batch`]: several writes committed as one atomic write, and the plan that
//! turns it into engine operations at commit time.
//!
//! Seqs are assigned at commit, under the store's commit lock, and the write
//! happens under the same lock: a queue therefore becomes visible in seq
//! order, and a reader paging a queue never sees seq N+1 before seq N.

use std::collections::{HashMap, HashSet};
use std::ops::{Range, RangeInclusive};

use roost_protocol::ClientId;

use crate::engine::Op;
use crate::error::{Result, StorageError};
use crate::fifo::{FifoOp, FifoPlan, FifoRemoval};
use crate::keys::{self, ColumnFamily};
use crate::record::{
    encode, AwaitingRel, FifoItem, FifoMeta, InflightState, QueueMeta, QueuedMessage,
    SessionRecord, StoredMessage,
};
use crate::storage::{Registry, Storage};

/// Writes to commit together with [`Storage::commit`]: all of them or none
/// survive a crash. Build one per publish (every persistent subscriber's
/// append, the publisher's QoS 2 state) and commit it before the PUBACK.
///
/// Operations apply in the order they were added. Records are encoded when
/// added; an encoding failure is returned by `commit`.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<BatchOp>,
    sync: Option<bool>,
    error: Option<StorageError>,
}

#[derive(Debug)]
pub(crate) enum BatchOp {
    PutSession(String, Vec<u8>),
    DeleteSession(String),
    /// Client, encoded messages, most messages the queue may hold.
    Append(ClientId, Vec<Vec<u8>>, Option<u64>),
    Remove(String, u64),
    SetInflight(String, u64, Vec<u8>),
    SetAwaitingRel(String, Option<Vec<u8>>),
    PutRetained(String, Vec<u8>),
    DeleteRetained(String),
    PutCluster(String, Vec<u8>),
    DeleteCluster(String),
    /// A named FIFO queue (`fifo.rs`).
    Fifo(FifoOp),
}

/// What [`Storage::commit`] did with each append of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The messages got these seqs, in order.
    Queued(Range<u64>),
    /// The client has no stored session (never put, or deleted before this
    /// commit): nothing was queued. A queue never outlives its session.
    NoSession,
}

/// The result of a commit: one outcome per append, per FIFO push and per
/// FIFO removal, each in the order added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReceipt {
    pub appends: Vec<(ClientId, AppendOutcome)>,
    /// Queue name and the seqs its items got ([`Batch::queue_push`]).
    pub queue_pushes: Vec<(String, Range<u64>)>,
    /// Queue name and what was removed ([`Batch::queue_remove`],
    /// [`Batch::queue_remove_through`], [`Batch::queue_drop_oldest`]).
    pub queue_removals: Vec<(String, FifoRemoval)>,
}

impl CommitReceipt {
    /// The seqs of the first append to `client_id` in the batch, if queued.
    pub fn seqs(&self, client_id: &ClientId) -> Option<Range<u64>> {
        self.appends.iter().find_map(|(c, o)| match o {
            AppendOutcome::Queued(seqs) if c == client_id => Some(seqs.clone()),
            _ => None,
        })
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Override `StorageOptions::sync` for this batch: fsync the write-ahead
    /// log before `commit` returns.
    pub fn sync(&mut self, sync: bool) -> &mut Batch {
        self.sync = Some(sync);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn encoded(&mut self, what: &'static str, record: &impl serde::Serialize) -> Vec<u8> {
        encode(what, record).unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            Vec::new()
        })
    }

    /// Store (replace) a session record. Write it from the session's owner
    /// only: it replaces the whole record.
    pub fn put_session(&mut self, client_id: &ClientId, record: &SessionRecord) -> &mut Batch {
        let value = self.encoded("session record", record);
        self.ops
            .push(BatchOp::PutSession(client_id.to_string(), value));
        self
    }

    /// Delete a session record and its whole queue (messages and inflight
    /// state).
    pub fn delete_session(&mut self, client_id: &ClientId) -> &mut Batch {
        self.ops.push(BatchOp::DeleteSession(client_id.to_string()));
        self
    }

    /// Append messages to the end of a session's queue. Their seqs are in the
    /// [`CommitReceipt`]; a client with no stored session gets
    /// [`AppendOutcome::NoSession`].
    pub fn append(&mut self, client_id: &ClientId, messages: &[QueuedMessage]) -> &mut Batch {
        self.append_inner(client_id, messages, None)
    }

    /// [`Batch::append`] to a queue that holds at most `max_len` messages:
    /// the messages that do not fit are refused (the queue keeps what it
    /// has, in order, with no gap). The receipt's range says how many were
    /// queued; it is empty when the queue was full.
    pub fn append_bounded(
        &mut self,
        client_id: &ClientId,
        messages: &[QueuedMessage],
        max_len: u64,
    ) -> &mut Batch {
        self.append_inner(client_id, messages, Some(max_len))
    }

    fn append_inner(
        &mut self,
        client_id: &ClientId,
        messages: &[QueuedMessage],
        max_len: Option<u64>,
    ) -> &mut Batch {
        let values = messages
            .iter()
            .map(|m| self.encoded("queued message", m))
            .collect();
        self.ops
            .push(BatchOp::Append(client_id.clone(), values, max_len));
        self
    }

    /// Remove one message (and its inflight state) from a queue: it was
    /// acknowledged, expired or dropped. Removing an absent seq does nothing.
    pub fn remove(&mut self, client_id: &ClientId, seq: u64) -> &mut Batch {
        self.ops.push(BatchOp::Remove(client_id.to_string(), seq));
        self
    }

    /// Record the outbound state of a queued message (replacing any earlier
    /// one). Does nothing when the message is not in the queue.
    pub fn set_inflight(
        &mut self,
        client_id: &ClientId,
        seq: u64,
        state: InflightState,
    ) -> &mut Batch {
        let value = self.encoded("inflight state", &state);
        self.ops
            .push(BatchOp::SetInflight(client_id.to_string(), seq, value));
        self
    }

    /// Store the session's inbound QoS 2 state: the packet ids whose
    /// PUBLISH was received (and PUBREC sent) and whose PUBREL has not
    /// arrived. A PUBLISH with one of them after a restart is a duplicate.
    /// [MQTT-4.3.3-9] Ignored when the client has no stored session.
    pub fn set_awaiting_rel(&mut self, client_id: &ClientId, packet_ids: &[u16]) -> &mut Batch {
        let value = if packet_ids.is_empty() {
            None
        } else {
            Some(self.encoded("awaiting rel", &AwaitingRel(packet_ids.to_vec())))
        };
        self.ops
            .push(BatchOp::SetAwaitingRel(client_id.to_string(), value));
        self
    }

    /// Store (replace) a record of the cluster layer under `key` (the
    /// `cluster` column family: member list, later evacuation state). The
    /// record type is the caller's; it is encoded like every other record.
    pub fn put_cluster(&mut self, key: &str, record: &impl serde::Serialize) -> &mut Batch {
        let value = self.encoded("cluster record", record);
        self.ops.push(BatchOp::PutCluster(key.to_string(), value));
        self
    }

    /// Delete the cluster record `key` (absent: no-op).
    pub fn delete_cluster(&mut self, key: &str) -> &mut Batch {
        self.ops.push(BatchOp::DeleteCluster(key.to_string()));
        self
    }

    /// Store (replace) the retained message of `topic`.
    pub fn put_retained(&mut self, topic: &str, message: &StoredMessage) -> &mut Batch {
        let value = self.encoded("retained message", message);
        self.ops
            .push(BatchOp::PutRetained(topic.to_string(), value));
        self
    }

    pub fn delete_retained(&mut self, topic: &str) -> &mut Batch {
        self.ops.push(BatchOp::DeleteRetained(topic.to_string()));
        self
    }

    /// Push items to the end of the named FIFO queue (`bridge_queues`),
    /// creating it if needed. Their seqs are in the receipt's
    /// `queue_pushes`. A name longer than 65,535 bytes fails the commit
    /// ([`StorageError::QueueName`]).
    pub fn queue_push(&mut self, name: &str, items: &[FifoItem]) -> &mut Batch {
        let values = items
            .iter()
            .map(|i| (self.encoded("fifo item", i), i.payload.len() as u64))
            .collect();
        self.fifo(FifoOp::Push(name.to_string(), values))
    }

    /// Remove every entry of the queue with a seq in `seqs` (one range
    /// delete): entries dropped while older ones wait for an
    /// acknowledgement. What was removed is in `queue_removals`.
    pub fn queue_remove(&mut self, name: &str, seqs: RangeInclusive<u64>) -> &mut Batch {
        self.fifo(FifoOp::Remove(name.to_string(), seqs))
    }

    /// Remove every entry up to and including `seq`: they were
    /// acknowledged.
    pub fn queue_remove_through(&mut self, name: &str, seq: u64) -> &mut Batch {
        self.queue_remove(name, 0..=seq)
    }

    /// Remove the oldest entries with a seq of at least `from_seq`, in
    /// order, until at least `min_bytes` payload bytes are freed (or none
    /// is left): a byte cap that drops the oldest. What was removed (how
    /// many, how many bytes, through which seq) is in `queue_removals`.
    pub fn queue_drop_oldest(&mut self, name: &str, from_seq: u64, min_bytes: u64) -> &mut Batch {
        self.fifo(FifoOp::DropOldest(name.to_string(), from_seq, min_bytes))
    }

    /// Delete the whole queue, meta included: its next push gets seq 1.
    pub fn queue_clear(&mut self, name: &str) -> &mut Batch {
        self.fifo(FifoOp::Clear(name.to_string()))
    }

    fn fifo(&mut self, op: FifoOp) -> &mut Batch {
        self.ops.push(BatchOp::Fifo(op));
        self
    }

    pub(crate) fn into_parts(self) -> Result<(Vec<BatchOp>, Option<bool>)> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.ops, self.sync)),
        }
    }
}

/// What a client's session looks like to a commit in progress: `None` = no
/// session record; `Some(None)` = session stored, queue meta not loaded yet.
type Slot = Option<Option<QueueMeta>>;

/// What [`Plan::finish`] returns.
pub(crate) type Finished = (
    Vec<Op>,
    CommitReceipt,
    HashMap<String, Slot>,
    Vec<(String, FifoMeta)>,
);

/// The engine operations of one batch, and the registry changes to apply
/// once they are written. Tracks the batch's own effects so that operations
/// later in the batch see earlier ones.
pub(crate) struct Plan<'a> {
    storage: &'a Storage,
    registry: &'a Registry,
    slots: HashMap<String, Slot>,
    dirty: HashSet<String>,
    /// Seqs appended / removed by this batch; clients whose queue this batch
    /// deleted (the engine's view of them is stale).
    appended: HashSet<(String, u64)>,
    removed: HashSet<(String, u64)>,
    cleared: HashSet<String>,
    ops: Vec<Op>,
    receipt: CommitReceipt,
    fifo: FifoPlan,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(storage: &'a Storage, registry: &'a Registry) -> Plan<'a> {
        Plan {
            storage,
            registry,
            slots: HashMap::new(),
            dirty: HashSet::new(),
            appended: HashSet::new(),
            removed: HashSet::new(),
            cleared: HashSet::new(),
            ops: Vec::new(),
            receipt: CommitReceipt::default(),
            fifo: FifoPlan::default(),
        }
    }

    fn slot(&mut self, client: &str) -> &mut Slot {
        let registry = self.registry;
        self.slots
            .entry(client.to_string())
            .or_insert_with(|| registry.slot(client))
    }

    /// The queue meta of a stored session (loaded on first use); `None` when
    /// the client has no session.
    fn meta(&mut self, client: &str) -> Result<Option<QueueMeta>> {
        match *self.slot(client) {
            None => Ok(None),
            Some(Some(meta)) => Ok(Some(meta)),
            Some(None) => {
                let meta = self.storage.load_queue_meta(client)?;
                *self.slot(client) = Some(Some(meta));
                Ok(Some(meta))
            }
        }
    }

    fn set_meta(&mut self, client: &str, meta: QueueMeta) {
        *self.slot(client) = Some(Some(meta));
        self.dirty.insert(client.to_string());
    }

    fn message_exists(&self, client: &str, seq: u64) -> Result<bool> {
        let key = (client.to_string(), seq);
        if self.removed.contains(&key) {
            return Ok(false);
        }
        if self.appended.contains(&key) {
            return Ok(true);
        }
        if self.cleared.contains(client) {
            return Ok(false);
        }
        self.storage
            .engine()
            .contains(ColumnFamily::SessionMsgs, &keys::message_key(client, seq))
    }

    pub(crate) fn add(&mut self, op: BatchOp) -> Result<()> {
        match op {
            BatchOp::PutSession(client, value) => self.put_session(client, value),
            BatchOp::DeleteSession(client) => self.delete_session(client),
            BatchOp::Append(client, values, max_len) => {
                return self.append(client, values, max_len)
            }
            BatchOp::Remove(client, seq) => return self.remove(&client, seq),
            BatchOp::SetInflight(client, seq, value) => {
                if self.slot(&client).is_some() && self.message_exists(&client, seq)? {
                    let key = keys::inflight_key(&client, seq);
                    self.ops
                        .push(Op::Put(ColumnFamily::SessionMsgs, key, value));
                }
            }
            BatchOp::SetAwaitingRel(client, value) => {
                if self.slot(&client).is_some() {
                    let key = keys::awaiting_rel_key(&client);
                    let cf = ColumnFamily::SessionMsgs;
                    self.ops.push(match value {
                        Some(value) => Op::Put(cf, key, value),
                        None => Op::Delete(cf, key),
                    });
                }
            }
            BatchOp::PutRetained(topic, value) => {
                self.ops
                    .push(Op::Put(ColumnFamily::Retained, topic.into_bytes(), value));
            }
            BatchOp::DeleteRetained(topic) => {
                self.ops
                    .push(Op::Delete(ColumnFamily::Retained, topic.into_bytes()));
            }
            BatchOp::PutCluster(key, value) => {
                self.ops
                    .push(Op::Put(ColumnFamily::Cluster, key.into_bytes(), value));
            }
            BatchOp::DeleteCluster(key) => {
                self.ops
                    .push(Op::Delete(ColumnFamily::Cluster, key.into_bytes()));
            }
            BatchOp::Fifo(op) => return self.fifo.add(self.storage, self.registry, op),
        }
        Ok(())
    }

    fn put_session(&mut self, client: String, value: Vec<u8>) {
        let cleared = self.cleared.contains(&client);
        let slot = self.slot(&client);
        if slot.is_none() {
            // A queue deleted by this batch is known empty; otherwise load
            // its meta when first needed.
            *slot = Some(cleared.then_some(QueueMeta::EMPTY));
        }
        self.ops
            .push(Op::Put(ColumnFamily::Sessions, client.into_bytes(), value));
    }

    fn delete_session(&mut self, client: String) {
        let prefix = keys::queue_prefix(&client);
        let end = keys::queue_end(&prefix);
        self.ops.push(Op::Delete(
            ColumnFamily::Sessions,
            client.clone().into_bytes(),
        ));
        self.ops
            .push(Op::DeleteRange(ColumnFamily::SessionMsgs, prefix, end));
        *self.slot(&client) = None;
        self.dirty.remove(&client);
        self.appended.retain(|(c, _)| *c != client);
        self.removed.retain(|(c, _)| *c != client);
        self.cleared.insert(client);
    }

    fn append(
        &mut self,
        client_id: ClientId,
        values: Vec<Vec<u8>>,
        max_len: Option<u64>,
    ) -> Result<()> {
        let client = client_id.as_str();
        let Some(mut meta) = self.meta(client)? else {
            self.receipt
                .appends
                .push((client_id, AppendOutcome::NoSession));
            return Ok(());
        };
        let first = meta.next_seq;
        for value in values {
            if max_len.is_some_and(|max| meta.len >= max) {
                break;
            }
            let seq = meta.next_seq;
            let key = keys::message_key(client, seq);
            self.ops
                .push(Op::Put(ColumnFamily::SessionMsgs, key, value));
            self.appended.insert((client.to_string(), seq));
            meta.next_seq += 1;
            meta.len += 1;
        }
        if meta.next_seq != first {
            self.set_meta(client, meta);
        }
        let outcome = AppendOutcome::Queued(first..meta.next_seq);
        self.receipt.appends.push((client_id, outcome));
        Ok(())
    }

    fn remove(&mut self, client: &str, seq: u64) -> Result<()> {
        let Some(mut meta) = self.meta(client)? else {
            return Ok(());
        };
        if !self.message_exists(client, seq)? {
            return Ok(());
        }
        let msgs = ColumnFamily::SessionMsgs;
        self.ops
            .push(Op::Delete(msgs, keys::message_key(client, seq)));
        self.ops
            .push(Op::Delete(msgs, keys::inflight_key(client, seq)));
        self.removed.insert((client.to_string(), seq));
        self.appended.remove(&(client.to_string(), seq));
        meta.len = meta.len.saturating_sub(1);
        self.set_meta(client, meta);
        Ok(())
    }

    /// The engine operations to write (queue metas last), the receipt, and
    /// the registry slots and FIFO metas to apply after the write succeeded.
    pub(crate) fn finish(mut self) -> Result<Finished> {
        let fifos = self.fifo.finish(&mut self.ops, &mut self.receipt)?;
        for client in &self.dirty {
            if let Some(&Some(Some(meta))) = self.slots.get(client) {
                let value = encode("queue meta", &meta)?;
                let key = keys::queue_prefix(client);
                self.ops
                    .push(Op::Put(ColumnFamily::SessionMsgs, key, value));
            }
        }
        Ok((self.ops, self.receipt, self.slots, fifos))
    }
}
