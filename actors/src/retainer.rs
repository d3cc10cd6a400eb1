//! Retained messages: the shared store and the retainer actor.
//!
//! A PUBLISH with RETAIN replaces the topic's retained message, or deletes
//! it when the payload is empty [MQTT-3.3.1-5..11]. The publishing connection
//! writes the store inline (a short write lock) so that a client that
//! publishes a retained message and then subscribes always gets it back; a
//! round trip through an actor mailbox could reorder the two.
//!
//! The retainer actor owns the store's upkeep: it sweeps expired messages
//! (Message Expiry Interval) on a timer. Persistence arrives with issue #3.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_protocol::{topic, Message};
use tracing::debug;

/// Retained messages by topic.
#[derive(Default)]
pub struct RetainedStore {
    map: RwLock<HashMap<ByteString, Arc<Message>>>,
}

impl RetainedStore {
    pub fn new() -> Arc<RetainedStore> {
        Arc::new(RetainedStore::default())
    }

    /// Apply a retained publish: replace, or delete on empty payload.
    pub fn apply(&self, msg: &Arc<Message>) {
        let mut map = self.map.write();
        if msg.payload.is_empty() {
            map.remove(&msg.topic);
        } else {
            map.insert(msg.topic.clone(), msg.clone());
        }
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

    pub fn delete(&self, topic: &str) -> bool {
        self.map.write().remove(topic).is_some()
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

    /// Drop expired messages; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map.write();
        let before = map.len();
        map.retain(|_, m| !m.is_expired(now));
        before - map.len()
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
