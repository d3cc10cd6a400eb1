//! The typed records stored on disk, and their encoding.
//!
//! Every stored value is one format byte followed by the postcard encoding of
//! a record type. Postcard writes struct fields in declaration order and enum
//! variants by index, with no field names, so **the types in this file are
//! the on-disk format `FORMAT_V2`**: reordering, removing or retyping a field
//! or an enum variant, or inserting one anywhere, changes the format. Such a
//! change adds a `FORMAT_V3` with its own types, keeps decoders that
//! convert older records, and bumps [`SUPPORTED_FORMAT`]. V2 differs from V1
//! only in [`QueuedMessage`] (its `id` at the end), decoded from V1 by
//! `decode_queued`; `format_v1_bytes_are_frozen` and
//! `format_v2_bytes_are_frozen` in the tests fail when this file drifts.
//!
//! These types deliberately do not reuse `roost-protocol`'s packet types, so
//! a change there cannot silently change what is on disk; `convert.rs` maps
//! between the two.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{RecordError, Result, StorageError};

/// Format byte of the records written before message identities.
pub const FORMAT_V1: u8 = 1;
/// Format byte of every record written by this version of Roost. V2 is V1
/// with one change: a [`QueuedMessage`] ends with its message's identity
/// ([`StoredMessageId`]). Every other record has the V1 layout; a V1
/// queued message decodes with no identity.
pub const FORMAT_V2: u8 = 2;
/// The newest format this version of Roost reads. A record or a store marker
/// with a higher format byte is refused ([`StorageError::NewerFormat`]).
pub const SUPPORTED_FORMAT: u8 = FORMAT_V2;

/// Quality of service. [MQTT-4.3]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StoredQos {
    #[default]
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// The protocol version a session was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredProtocol {
    V311,
    V5,
}

/// The MQTT 5 properties of a PUBLISH that are forwarded to subscribers
/// unchanged. [MQTT-3.3.2-17..20] Message expiry is not here: a stored
/// message keeps an absolute deadline instead ([`StoredMessage::expires_at_ms`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ForwardedProperties {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Order and duplicates preserved. [MQTT-3.3.2-18]
    pub user_properties: Vec<(String, String)>,
}

/// An application message as stored: a retained message, or the message part
/// of a queued one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Bytes,
    /// QoS the publisher used.
    pub qos: StoredQos,
    pub retain: bool,
    /// Client id of the publisher (No Local); empty for broker messages.
    pub publisher: String,
    /// Wall-clock deadline (ms since the Unix epoch) after which the message
    /// is no longer delivered; `None` when it has no Message Expiry Interval.
    /// Absolute, so expiry keeps running while the node is down.
    pub expires_at_ms: Option<u64>,
    pub properties: ForwardedProperties,
}

/// How one message is delivered to the session that queued it: what its
/// matching subscriptions decided at publish time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// min(message QoS, granted QoS). [MQTT-3.8.4-8]
    pub qos: StoredQos,
    /// The RETAIN flag to send. [MQTT-3.3.1-12/13]
    pub retain: bool,
    /// Identifiers of every matching subscription. [MQTT-3.3.4-4]
    pub subscription_ids: Vec<u32>,
}

/// One entry of a session's durable queue.
///
/// Field order matters beyond the format: the delivery comes first so a
/// message encoded once can later be shared by N queue entries without
/// re-encoding (postcard concatenates fields).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub delivery: DeliveryRecord,
    pub message: StoredMessage,
    /// The message's identity (`roost_protocol::MessageId`); all zero when
    /// it has none (stored by a V1 version, or a broker message). Last, so
    /// that the V2 bytes are the V1 bytes followed by it.
    pub id: StoredMessageId,
}

/// `roost_protocol::MessageId` as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredMessageId {
    pub boot: u64,
    pub seq: u64,
}

/// [`QueuedMessage`] as `FORMAT_V1` stored it.
#[derive(Debug, Deserialize)]
struct QueuedMessageV1 {
    delivery: DeliveryRecord,
    message: StoredMessage,
}

/// Where an outbound QoS 1/2 delivery stands. [MQTT-4.3.2, 4.3.3]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InflightStage {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    /// Redelivered with DUP after a reconnect. [MQTT-4.4.0-1]
    Published,
    /// PUBREC received, PUBREL sent; waiting for PUBCOMP. After a reconnect
    /// the PUBREL is sent again, not the message.
    Released,
}

/// The outbound state of one queued message once it has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightState {
    pub packet_id: u16,
    pub stage: InflightStage,
}

/// Retain Handling subscription option. [MQTT-3.8.3.1]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StoredRetainHandling {
    #[default]
    OnSubscribe,
    OnNewSubscribe,
    Never,
}

/// The subscription options byte. [MQTT-3.8.3.1]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredSubscriptionOptions {
    pub qos: StoredQos,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: StoredRetainHandling,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The full filter, including a `$share/group/` prefix.
    pub filter: String,
    pub options: StoredSubscriptionOptions,
    pub identifier: Option<u32>,
}

/// A session's will message. Intervals stay relative: the will delay and the
/// will's message expiry start when it is published.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: StoredQos,
    pub retain: bool,
    /// Will Delay Interval, seconds. [MQTT-3.1.3-9]
    pub delay_interval_secs: Option<u32>,
    /// Message Expiry Interval of the will, seconds.
    pub message_expiry_interval_secs: Option<u32>,
    pub properties: ForwardedProperties,
}

/// Everything about a persistent session except its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub protocol: StoredProtocol,
    pub subscriptions: Vec<StoredSubscription>,
    /// Session Expiry Interval, seconds (`u32::MAX`: never expires).
    pub expiry_interval_secs: u32,
    /// Wall clock (ms since the Unix epoch) when the client disconnected;
    /// `None` while connected. With the interval it gives the absolute expiry,
    /// so expiry keeps running across restarts.
    pub disconnected_at_ms: Option<u64>,
    pub will: Option<StoredWill>,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived: a PUBLISH with
    /// one of them is a duplicate, not a new message. [MQTT-4.3.3-9]
    pub awaiting_pubrel: Vec<u16>,
}

/// A session's inbound QoS 2 packet ids awaiting PUBREL
/// ([`crate::Batch::set_awaiting_rel`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct AwaitingRel(pub Vec<u16>);

/// Per-queue bookkeeping, stored next to the queue and written in the same
/// batch as every change to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct QueueMeta {
    /// The seq the next appended message gets (seqs start at 1).
    pub next_seq: u64,
    /// Messages in the queue.
    pub len: u64,
}

impl QueueMeta {
    pub(crate) const EMPTY: QueueMeta = QueueMeta {
        next_seq: 1,
        len: 0,
    };
}

/// One entry of a named FIFO queue (`bridge_queues`, [`crate::Batch::queue_push`]):
/// opaque bytes, encoded by the queue's owner, and when they were queued.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FifoItem {
    /// Wall clock (ms since the Unix epoch) when the entry was queued, for a
    /// time to live that keeps running across restarts.
    pub enqueued_at_ms: u64,
    /// The owner's encoding of the entry. Its length is what the queue's
    /// byte count adds up.
    pub payload: Bytes,
}

/// Per-FIFO-queue bookkeeping, stored next to the queue (its bare prefix)
/// and written in the same batch as every change to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct FifoMeta {
    /// The seq the next pushed entry gets (seqs start at 1).
    pub next_seq: u64,
    /// The seq of the oldest entry; `next_seq` when the queue is empty.
    pub first_seq: u64,
    /// Entries in the queue.
    pub len: u64,
    /// Sum of their payload lengths.
    pub bytes: u64,
}

impl FifoMeta {
    pub(crate) const EMPTY: FifoMeta = FifoMeta {
        next_seq: 1,
        first_seq: 1,
        len: 0,
        bytes: 0,
    };
}

/// The store-level marker, under [`crate::keys::MARKER_KEY`] in the default
/// column family. Its format byte is the store's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreMarker {
    /// The Roost version that created the store, for humans.
    pub created_by: String,
}

/// Encode a record behind the current format byte.
pub(crate) fn encode<T: Serialize>(what: &'static str, record: &T) -> Result<Vec<u8>> {
    postcard::to_extend(record, vec![FORMAT_V2])
        .map_err(|source| StorageError::Encode { what, source })
}

/// Decode a value written by [`encode`] (any format this version reads;
/// for a [`QueuedMessage`], [`decode_queued`]). Never panics, whatever the
/// bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    let (&format, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    match format {
        FORMAT_V1 | FORMAT_V2 => decode_body(body),
        found if found > SUPPORTED_FORMAT => Err(RecordError::NewerFormat {
            found,
            supported: SUPPORTED_FORMAT,
        }),
        other => Err(RecordError::UnknownFormat(other)),
    }
}

/// Decode a queued message of either format (a V1 one has no identity).
pub(crate) fn decode_queued(bytes: &[u8]) -> Result<QueuedMessage, RecordError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            let v1: QueuedMessageV1 = decode_body(body)?;
            Ok(QueuedMessage {
                delivery: v1.delivery,
                message: v1.message,
                id: StoredMessageId::default(),
            })
        }
        _ => decode(bytes),
    }
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RecordError> {
    let (record, rest) = postcard::take_from_bytes(body).map_err(RecordError::Decode)?;
    if rest.is_empty() {
        Ok(record)
    } else {
        Err(RecordError::TrailingBytes(rest.len()))
    }
}
