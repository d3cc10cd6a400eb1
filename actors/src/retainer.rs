//! Retained messages: the shared store and the retainer actor.
//!
//! A PUBLISH with RETAIN replaces the topic's retained message, or deletes
//! it when the payload is empty [MQTT-3.3.1-5..11]. The publishing connection
//! writes the store inline (a short write lock) so that a client that
//! publishes a retained message and then subscribes always gets it back; a
//! round trip through an actor mailbox could reorder the two.
//!
//! Persistence (issue #3): once the node attached its durable store
//! ([`RetainedStore::attach_storage`]), every change is committed to it
//! inline too, by whoever makes the change (the publisher, the management
//! API, the sweep). Without `storage.sync` a commit is a memtable insert and
//! a write(2) to the write-ahead log, microseconds, so the publisher's PUBACK
//! follows a retained message that survives `kill -9`; with it, the fsync
//! runs under `block_in_place` so the worker's other tasks move elsewhere.
//! A failed write is logged and counted, and memory is updated anyway: the
//! broker keeps serving what it was told while it runs.
//!
//! The retainer actor owns the store's upkeep: it sweeps expired messages
//! (Message Expiry Interval) on a timer, from memory and from disk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_protocol::{topic, Message};
use roost_storage::{Batch, Storage, StorageError, StoredMessage};
use tracing::{debug, warn};

use crate::broker::{blocking, unix_ms};

/// Retained messages by topic.
#[derive(Default)]
pub struct RetainedStore {
    map: RwLock<HashMap<ByteString, Arc<Message>>>,
    /// The node's durable store, attached once at start; never set in actor
    /// tests, which then keep retained messages in memory only.
    storage: OnceLock<Storage>,
    /// Held by every change, across the memory update and the commit, so
    /// that memory and disk see changes in the same order (the last of two
    /// racing publishers to a topic wins in both). Readers take only `map`
    /// and never wait for a commit.
    writes: Mutex<()>,
    /// Commits that failed (each one logged as `retained_write_failed`).
    write_errors: AtomicU64,
}

impl RetainedStore {
    pub fn new() -> Arc<RetainedStore> {
        Arc::new(RetainedStore::default())
    }

    /// Attach the node's durable store and load the retained messages it
    /// holds; those that expired while the node was down are deleted from
    /// it instead. Returns how many were loaded. Blocks on the store: call
    /// it from a blocking context, once.
    ///
    /// Loading happens here, at node start before the tree runs, and not in
    /// the retainer's `pre_start`: the map lives in `BrokerCtx` and outlives
    /// the retainer, and every change reaches memory and disk together, so a
    /// restarted retainer has nothing to reload (a reload would even bring
    /// back a message whose delete failed to reach the disk). Loading before
    /// the listeners start also means no client subscribes before the
    /// retained messages are back.
    pub fn attach_storage(&self, storage: Storage) -> Result<usize, StorageError> {
        if self.storage.set(storage.clone()).is_err() {
            warn!("retained_storage_already_attached");
            return Ok(0);
        }
        let stored = storage.load_retained()?;
        let (now, now_ms) = (Instant::now(), unix_ms());
        let _order = self.writes.lock();
        let mut expired = Vec::new();
        let mut loaded = 0;
        {
            let mut map = self.map.write();
            for m in stored {
                if m.expires_at_ms.is_some_and(|at| at <= now_ms) {
                    expired.push(m.topic);
                    continue;
                }
                let msg = m.into_message(now, now_ms);
                map.insert(msg.topic.clone(), Arc::new(msg));
                loaded += 1;
            }
        }
        self.persist_deletes(&expired);
        Ok(loaded)
    }

    /// Apply a retained publish: replace, or delete on empty payload; then
    /// commit the change when a durable store is attached.
    pub fn apply(&self, msg: &Arc<Message>) {
        let _order = self.writes.lock();
        {
            let mut map = self.map.write();
            if msg.payload.is_empty() {
                map.remove(&msg.topic);
            } else {
                map.insert(msg.topic.clone(), msg.clone());
            }
        }
        if self.storage.get().is_none() {
            return;
        }
        let mut batch = Batch::new();
        if msg.payload.is_empty() {
            // Even when memory had none: it heals an earlier failed delete.
            batch.delete_retained(&msg.topic);
        } else {
            let stored = StoredMessage::from_message(msg, Instant::now(), unix_ms());
            batch.put_retained(&msg.topic, &stored);
        }
        self.commit_or_count(batch, &msg.topic);
    }

    /// Store `msg` (not a deletion) only if its topic has no retained
    /// message here: a copy from another node that this one missed. Returns
    /// whether it was stored.
    pub fn apply_if_absent(&self, msg: &Arc<Message>) -> bool {
        if msg.payload.is_empty() {
            return false;
        }
        let _order = self.writes.lock();
        {
            let mut map = self.map.write();
            if map.contains_key(&msg.topic) {
                return false;
            }
            map.insert(msg.topic.clone(), msg.clone());
        }
        if self.storage.get().is_some() {
            let mut batch = Batch::new();
            let stored = StoredMessage::from_message(msg, Instant::now(), unix_ms());
            batch.put_retained(&msg.topic, &stored);
            self.commit_or_count(batch, &msg.topic);
        }
        true
    }

    /// Every retained message (expired ones included; the caller filters).
    pub fn all(&self) -> Vec<Arc<Message>> {
        self.map.read().values().cloned().collect()
    }

    /// Commit `batch` to the attached store, if any, with an fsync that does
    /// not stall the runtime worker when `storage.sync` asks for one. A
    /// failure is logged and counted, never raised: memory already changed.
    fn commit_or_count(&self, batch: Batch, topic: &str) {
        let Some(storage) = self.storage.get() else {
            return;
        };
        let result = if storage.options().sync {
            blocking(|| storage.commit(batch))
        } else {
            storage.commit(batch)
        };
        if let Err(e) = result {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
            warn!(topic, error = %e, "retained_write_failed");
        }
    }

    /// Commits to the durable store that failed since start.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Retained messages whose topic matches `filter` (not a `$share` form),
    /// skipping expired ones.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let map = self.map.read();
        if !topic::has_wildcards(filter) {
            return map
                .get(filter)
                .filter(|m| !m.is_expired(now))
                .cloned()
                .into_iter()
                .collect();
        }
        map.values()
            .filter(|m| !m.is_expired(now) && topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    pub fn get(&self, topic: &str) -> Option<Arc<Message>> {
        self.map.read().get(topic).cloned()
    }

    /// Delete a topic's retained message (management API), from memory and
    /// from the durable store.
    pub fn delete(&self, topic: &str) -> bool {
        let _order = self.writes.lock();
        if self.map.write().remove(topic).is_none() {
            return false;
        }
        let mut batch = Batch::new();
        batch.delete_retained(topic);
        self.commit_or_count(batch, topic);
        true
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn topics(&self) -> Vec<ByteString> {
        self.map.read().keys().cloned().collect()
    }

    /// Drop expired messages, from memory and from the durable store (one
    /// commit); returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let _order = self.writes.lock();
        let mut expired = Vec::new();
        self.map.write().retain(|topic, m| {
            let keep = !m.is_expired(now);
            if !keep {
                expired.push(topic.clone());
            }
            keep
        });
        self.persist_deletes(&expired);
        expired.len()
    }

    /// Delete `topics` from the durable store in one commit.
    fn persist_deletes<T: AsRef<str>>(&self, topics: &[T]) {
        let Some(first) = topics.first() else {
            return;
        };
        let mut batch = Batch::new();
        for topic in topics {
            batch.delete_retained(topic.as_ref());
        }
        self.commit_or_count(batch, first.as_ref());
    }
}

pub struct Retainer;

pub struct RetainerArgs {
    pub store: Arc<RetainedStore>,
    pub sweep_interval: Duration,
}

pub enum RetainerMsg {
    Sweep,
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for RetainerMsg {}

impl Actor for Retainer {
    type Msg = RetainerMsg;
    type State = Arc<RetainedStore>;
    type Arguments = RetainerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RetainerMsg>,
        args: RetainerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.sweep_interval, || RetainerMsg::Sweep);
        Ok(args.store)
    }

    async fn handle(
        &self,
        _: ActorRef<RetainerMsg>,
        msg: RetainerMsg,
        store: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RetainerMsg::Sweep => {
                let n = store.sweep(Instant::now());
                if n > 0 {
                    debug!(expired = n, "retained_expired");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_protocol::{ClientId, QoS};
    use roost_storage::StorageOptions;

    fn retained(topic: &str, payload: &'static [u8], expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            id: roost_protocol::MessageId::NONE,
            topic: ByteString::from(topic),
            payload: bytes::Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            publisher: ClientId::new("p"),
            properties: Default::default(),
            expires_at,
        })
    }

    fn stored_topics(storage: &Storage) -> Vec<String> {
        let stored = storage.load_retained().unwrap();
        stored.into_iter().map(|m| m.topic).collect()
    }

    #[test]
    fn every_change_reaches_the_store_and_a_new_node_loads_it() {
        let storage = Storage::in_memory(StorageOptions::default());
        let store = RetainedStore::new();
        assert_eq!(store.attach_storage(storage.clone()).unwrap(), 0);
        store.apply(&retained("a", b"1", None));
        store.apply(&retained("b", b"2", None));
        store.apply(&retained("c", b"3", None));
        store.apply(&retained("a", b"1bis", None));
        store.apply(&retained("b", b"", None));
        assert!(store.delete("c"));
        assert!(!store.delete("c"));
        assert_eq!(stored_topics(&storage), ["a"]);
        assert_eq!(store.write_errors(), 0);

        let restarted = RetainedStore::new();
        assert_eq!(restarted.attach_storage(storage).unwrap(), 1);
        let a = restarted.get("a").expect("loaded");
        assert_eq!(
            (&a.payload[..], a.qos, a.retain),
            (&b"1bis"[..], QoS::AtLeastOnce, true)
        );
        assert_eq!(restarted.len(), 1);
    }

    #[test]
    fn expired_messages_are_deleted_from_the_store_by_the_sweep_and_at_load() {
        let storage = Storage::in_memory(StorageOptions::default());
        let store = RetainedStore::new();
        store.attach_storage(storage.clone()).unwrap();
        let now = Instant::now();
        store.apply(&retained(
            "short",
            b"x",
            Some(now + Duration::from_millis(10)),
        ));
        store.apply(&retained(
            "long",
            b"y",
            Some(now + Duration::from_secs(3600)),
        ));
        assert_eq!(store.sweep(now + Duration::from_secs(1)), 1);
        assert_eq!(stored_topics(&storage), ["long"]);

        // One that expired while the node was down: skipped and deleted.
        let mut gone = StoredMessage::from_message(&retained("gone", b"z", None), now, unix_ms());
        gone.expires_at_ms = Some(unix_ms() - 1_000);
        storage.put_retained("gone", &gone).unwrap();
        let restarted = RetainedStore::new();
        assert_eq!(restarted.attach_storage(storage.clone()).unwrap(), 1);
        assert!(restarted.get("gone").is_none());
        assert_eq!(stored_topics(&storage), ["long"]);
        let left = restarted.get("long").unwrap().expires_at.unwrap();
        assert!(left > Instant::now() + Duration::from_secs(3500));
    }
}
