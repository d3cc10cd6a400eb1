//! A session handed over to another node (cluster takeover, issue #4): what
//! the node that held it sends to the node the client reconnected to.
//!
//! The new node writes it to its own store as a persistent session (record,
//! then the messages in order with their inflight states) and starts the
//! session from there, the way a node restart restores one: inflight
//! messages are resent with DUP and their packet ids, a released QoS 2
//! exchange gets its PUBREL again, the queue follows.

use serde::{Deserialize, Serialize};

use roost_storage::{InflightStage, InflightState, QueuedMessage, SessionRecord};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionHandover {
    /// Subscriptions, expiry, protocol. No will: the old connection's will
    /// was published (no delay) or cancelled (a delay) by the takeover,
    /// as for a takeover on one node [MQTT-3.1.3-9].
    pub record: SessionRecord,
    /// The inflight exchanges in send order, then the queue.
    pub messages: Vec<HandoverMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoverMessage {
    /// For a released QoS 2 exchange (only the PUBREL is owed) the message
    /// itself is gone: an empty placeholder, never sent.
    pub queued: QueuedMessage,
    pub inflight: Option<InflightState>,
}

impl HandoverMessage {
    pub fn queued(queued: QueuedMessage) -> HandoverMessage {
        HandoverMessage {
            queued,
            inflight: None,
        }
    }

    pub fn published(queued: QueuedMessage, packet_id: u16) -> HandoverMessage {
        HandoverMessage {
            queued,
            inflight: Some(InflightState {
                packet_id,
                stage: InflightStage::Published,
            }),
        }
    }

    pub fn released(packet_id: u16) -> HandoverMessage {
        HandoverMessage {
            queued: QueuedMessage::default(),
            inflight: Some(InflightState {
                packet_id,
                stage: InflightStage::Released,
            }),
        }
    }
}

impl SessionHandover {
    /// Its messages as queue entries, for another session of the same
    /// client: what was inflight goes as new (that connection never
    /// acknowledged it); a released QoS 2 exchange (only a PUBREL owed) is
    /// done.
    pub fn into_queued(self) -> Vec<QueuedMessage> {
        self.messages
            .into_iter()
            .filter(|m| !matches!(m.inflight, Some(s) if s.stage == InflightStage::Released))
            .map(|m| m.queued)
            .collect()
    }
}

/// What the registry of the node holding a client's session did with a
/// takeover request from another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HandOverOutcome {
    /// No session for this client here.
    NotHere,
    /// Clean start: the session here was discarded (its connection got
    /// DISCONNECT 0x8E); nothing moves.
    Discarded,
    /// The session moved: it ended here.
    Moved(Box<SessionHandover>),
}
