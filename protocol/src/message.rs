//! The application message as the broker routes it, and the identifiers that
//! name clients.
//!
//! A [`Message`] is built once per inbound PUBLISH and shared (`Arc`) by every
//! subscriber it is delivered to: topic and payload are `Bytes`-backed and are
//! never copied per subscriber. Per-delivery fields (packet id, QoS after
//! downgrade, DUP, topic alias, subscription identifiers) live in the outgoing
//! [`Publish`] built at send time.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{LastWill, Publish, PublishProperties, QoS};

/// An MQTT client identifier. [MQTT-3.1.3-2]
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub ByteString);

impl ClientId {
    pub fn new(s: impl Into<ByteString>) -> ClientId {
        ClientId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of one published message, cluster-wide: given once, where
/// the PUBLISH (or the will) entered the cluster, and carried with every
/// copy (forwards, queues, hand-overs). Two copies with the same identity
/// are the same message: a session merged from another node skips the
/// copies it already had.
///
/// `boot` is drawn at random when the process starts, so identities from
/// different nodes, or from one node before and after a restart, never
/// collide; `seq` counts within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MessageId {
    pub boot: u64,
    pub seq: u64,
}

impl MessageId {
    /// No identity: a message the broker made itself (`$SYS`), or one
    /// stored before identities existed. Never equal to a real one.
    pub const NONE: MessageId = MessageId { boot: 0, seq: 0 };

    /// A new identity.
    pub fn next() -> MessageId {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static BOOT: OnceLock<u64> = OnceLock::new();
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let boot = *BOOT.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            // RandomState is seeded from the OS: a random 64-bit value.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            h.finish().max(1)
        });
        MessageId {
            boot,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn is_none(&self) -> bool {
        *self == MessageId::NONE
    }
}

/// An application message in flight through the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Given where it was published ([`MessageId::next`], by the broker's
    /// publish path); [`MessageId::NONE`] until then.
    pub id: MessageId,
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS the publisher used; each delivery is downgraded to the
    /// subscription's granted QoS. [MQTT-3.8.4-8]
    pub qos: QoS,
    pub retain: bool,
    /// Client id of the publisher (for No Local) [MQTT-3.8.3-3]; empty for
    /// messages the broker itself publishes.
    pub publisher: ClientId,
    /// Properties forwarded untouched to subscribers [MQTT-3.3.2-17..20], with
    /// `topic_alias` and `subscription_identifiers` always cleared (they are
    /// per connection / per delivery).
    pub properties: PublishProperties,
    /// When the message stops being deliverable (Message Expiry Interval).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Build the routed message from a (de-aliased) inbound PUBLISH.
    pub fn from_publish(p: Publish, publisher: ClientId, now: Instant) -> Message {
        let mut properties = p.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers = Vec::new();
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        Message {
            // Given by the broker when it publishes it (the channel is
            // deterministic: equal inputs, equal messages).
            id: MessageId::NONE,
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            publisher,
            properties,
            expires_at,
        }
    }

    /// The will message, as published when the connection is lost.
    /// [MQTT-3.1.2-8]
    pub fn from_will(w: LastWill, publisher: ClientId, now: Instant) -> Message {
        let p = w.properties;
        let publish = Publish {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                content_type: p.content_type,
                ..PublishProperties::default()
            },
            ..Publish::default()
        };
        Message::from_publish(publish, publisher, now)
    }

    /// The same message with identity `id`.
    pub fn with_id(mut self, id: MessageId) -> Message {
        self.id = id;
        self
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The outgoing PUBLISH for one delivery. The Message Expiry Interval is
    /// replaced by the time left. [MQTT-3.3.2-6]
    pub fn to_publish(&self, d: &DeliveryOpts, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let mut properties = self.properties.clone();
        if let Some(at) = self.expires_at {
            let left = at.saturating_duration_since(now).as_secs();
            properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(u32::MAX));
        }
        properties.subscription_identifiers = d.subscription_ids.clone();
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: self.topic.clone(),
            packet_id,
            properties,
            payload: self.payload.clone(),
        }
    }
}

/// What one subscriber's matching subscriptions decided for one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryOpts {
    /// min(message QoS, max granted QoS of the matching subscriptions).
    pub qos: QoS,
    /// The RETAIN flag to send: for a live publish, true only when a matching
    /// subscription has Retain As Published [MQTT-3.3.1-12/13]; for retained
    /// messages sent because of a subscribe, always true [MQTT-3.3.1-9].
    pub retain: bool,
    /// Identifiers of every matching subscription that has one. [MQTT-3.3.4-4]
    pub subscription_ids: Vec<u32>,
}

/// A message queued for one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub opts: DeliveryOpts,
    /// Its seq in the session's durable queue, when it was stored before
    /// being handed over (persistent sessions; see `roost-storage`). Every
    /// change to a stored delivery's state is reported as a
    /// [`crate::session::StoreOp`].
    pub stored: Option<u64>,
}

impl Delivery {
    /// A delivery that is not in any durable queue.
    pub fn new(message: Arc<Message>, opts: DeliveryOpts) -> Delivery {
        Delivery {
            message,
            opts,
            stored: None,
        }
    }
}
