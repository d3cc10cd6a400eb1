//! Conversions between `roost-protocol`'s in-memory types and the stored
//! records. The records stay separate types so the on-disk format changes
//! only on purpose (see `record.rs`); these functions are the one place that
//! maps the two, so the integration does not rewrite them per actor.
//!
//! Time: the broker runs on monotonic `Instant`s, which mean nothing after a
//! restart; the records hold wall-clock milliseconds since the Unix epoch.
//! Conversions take both "now"s (`now`, `now_ms`) and translate deadlines.

use std::time::{Duration, Instant};

use bytestring::ByteString;
use roost_protocol::{
    ClientId, DeliveryOpts, LastWill, Message, MessageId, ProtocolVersion, PublishProperties, QoS,
    RetainHandling, SubscriptionOptions, WillProperties,
};

use crate::record::{
    DeliveryRecord, ForwardedProperties, QueuedMessage, StoredMessage, StoredMessageId,
    StoredProtocol, StoredQos, StoredRetainHandling, StoredSubscriptionOptions, StoredWill,
};

impl From<QoS> for StoredQos {
    fn from(q: QoS) -> StoredQos {
        match q {
            QoS::AtMostOnce => StoredQos::AtMostOnce,
            QoS::AtLeastOnce => StoredQos::AtLeastOnce,
            QoS::ExactlyOnce => StoredQos::ExactlyOnce,
        }
    }
}

impl From<StoredQos> for QoS {
    fn from(q: StoredQos) -> QoS {
        match q {
            StoredQos::AtMostOnce => QoS::AtMostOnce,
            StoredQos::AtLeastOnce => QoS::AtLeastOnce,
            StoredQos::ExactlyOnce => QoS::ExactlyOnce,
        }
    }
}

impl From<ProtocolVersion> for StoredProtocol {
    fn from(p: ProtocolVersion) -> StoredProtocol {
        match p {
            ProtocolVersion::V311 => StoredProtocol::V311,
            ProtocolVersion::V5 => StoredProtocol::V5,
        }
    }
}

impl From<StoredProtocol> for ProtocolVersion {
    fn from(p: StoredProtocol) -> ProtocolVersion {
        match p {
            StoredProtocol::V311 => ProtocolVersion::V311,
            StoredProtocol::V5 => ProtocolVersion::V5,
        }
    }
}

impl From<SubscriptionOptions> for StoredSubscriptionOptions {
    fn from(o: SubscriptionOptions) -> StoredSubscriptionOptions {
        StoredSubscriptionOptions {
            qos: o.qos.into(),
            no_local: o.no_local,
            retain_as_published: o.retain_as_published,
            retain_handling: match o.retain_handling {
                RetainHandling::OnSubscribe => StoredRetainHandling::OnSubscribe,
                RetainHandling::OnNewSubscribe => StoredRetainHandling::OnNewSubscribe,
                RetainHandling::Never => StoredRetainHandling::Never,
            },
        }
    }
}

impl From<StoredSubscriptionOptions> for SubscriptionOptions {
    fn from(o: StoredSubscriptionOptions) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: o.qos.into(),
            no_local: o.no_local,
            retain_as_published: o.retain_as_published,
            retain_handling: match o.retain_handling {
                StoredRetainHandling::OnSubscribe => RetainHandling::OnSubscribe,
                StoredRetainHandling::OnNewSubscribe => RetainHandling::OnNewSubscribe,
                StoredRetainHandling::Never => RetainHandling::Never,
            },
        }
    }
}

fn user_properties_to_stored(props: &[(ByteString, ByteString)]) -> Vec<(String, String)> {
    props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn user_properties_from_stored(props: Vec<(String, String)>) -> Vec<(ByteString, ByteString)> {
    props
        .into_iter()
        .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
        .collect()
}

impl From<&PublishProperties> for ForwardedProperties {
    /// Keeps only what is forwarded: topic alias, subscription identifiers
    /// and message expiry are per connection, per delivery or kept apart.
    fn from(p: &PublishProperties) -> ForwardedProperties {
        ForwardedProperties {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.as_ref().map(ToString::to_string),
            response_topic: p.response_topic.as_ref().map(ToString::to_string),
            correlation_data: p.correlation_data.clone(),
            user_properties: user_properties_to_stored(&p.user_properties),
        }
    }
}

impl ForwardedProperties {
    /// The PUBLISH properties, with the given Message Expiry Interval.
    pub fn into_publish_properties(
        self,
        message_expiry_interval: Option<u32>,
    ) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval,
            response_topic: self.response_topic.map(ByteString::from),
            correlation_data: self.correlation_data,
            user_properties: user_properties_from_stored(self.user_properties),
            content_type: self.content_type.map(ByteString::from),
            ..PublishProperties::default()
        }
    }
}

impl StoredMessage {
    /// The record of a routed message; its expiry deadline becomes wall-clock.
    pub fn from_message(m: &Message, now: Instant, now_ms: u64) -> StoredMessage {
        let expires_at_ms = m.expires_at.map(|at| {
            let left = at.saturating_duration_since(now).as_millis();
            now_ms.saturating_add(u64::try_from(left).unwrap_or(u64::MAX))
        });
        StoredMessage {
            topic: m.topic.to_string(),
            payload: m.payload.clone(),
            qos: m.qos.into(),
            retain: m.retain,
            publisher: m.publisher.to_string(),
            expires_at_ms,
            properties: ForwardedProperties::from(&m.properties),
        }
    }

    /// The routed message again. A deadline already passed gives a message
    /// that `is_expired(now)`; the Message Expiry Interval property is the
    /// time left. [MQTT-3.3.2-6]
    pub fn into_message(self, now: Instant, now_ms: u64) -> Message {
        let left_ms = self.expires_at_ms.map(|at| at.saturating_sub(now_ms));
        let expiry_interval = left_ms.map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX));
        Message {
            id: MessageId::NONE,
            topic: ByteString::from(self.topic),
            payload: self.payload,
            qos: self.qos.into(),
            retain: self.retain,
            publisher: ClientId::new(self.publisher),
            properties: self.properties.into_publish_properties(expiry_interval),
            expires_at: left_ms.map(|ms| now + Duration::from_millis(ms)),
        }
    }
}

impl From<&DeliveryOpts> for DeliveryRecord {
    fn from(d: &DeliveryOpts) -> DeliveryRecord {
        DeliveryRecord {
            qos: d.qos.into(),
            retain: d.retain,
            subscription_ids: d.subscription_ids.clone(),
        }
    }
}

impl From<DeliveryRecord> for DeliveryOpts {
    fn from(d: DeliveryRecord) -> DeliveryOpts {
        DeliveryOpts {
            qos: d.qos.into(),
            retain: d.retain,
            subscription_ids: d.subscription_ids,
        }
    }
}

impl QueuedMessage {
    /// The queue entry of one delivery (message + this subscriber's options).
    pub fn from_delivery(
        m: &Message,
        opts: &DeliveryOpts,
        now: Instant,
        now_ms: u64,
    ) -> QueuedMessage {
        QueuedMessage {
            delivery: opts.into(),
            message: StoredMessage::from_message(m, now, now_ms),
            id: m.id.into(),
        }
    }
}

impl From<MessageId> for StoredMessageId {
    fn from(id: MessageId) -> StoredMessageId {
        StoredMessageId {
            boot: id.boot,
            seq: id.seq,
        }
    }
}

impl From<StoredMessageId> for MessageId {
    fn from(id: StoredMessageId) -> MessageId {
        MessageId {
            boot: id.boot,
            seq: id.seq,
        }
    }
}

impl From<&LastWill> for StoredWill {
    fn from(w: &LastWill) -> StoredWill {
        let p = &w.properties;
        StoredWill {
            topic: w.topic.to_string(),
            payload: w.payload.clone(),
            qos: w.qos.into(),
            retain: w.retain,
            delay_interval_secs: p.delay_interval,
            message_expiry_interval_secs: p.message_expiry_interval,
            properties: ForwardedProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.as_ref().map(ToString::to_string),
                response_topic: p.response_topic.as_ref().map(ToString::to_string),
                correlation_data: p.correlation_data.clone(),
                user_properties: user_properties_to_stored(&p.user_properties),
            },
        }
    }
}

impl From<StoredWill> for LastWill {
    fn from(w: StoredWill) -> LastWill {
        let p = w.properties;
        LastWill {
            topic: ByteString::from(w.topic),
            payload: w.payload,
            qos: w.qos.into(),
            retain: w.retain,
            properties: WillProperties {
                delay_interval: w.delay_interval_secs,
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: w.message_expiry_interval_secs,
                content_type: p.content_type.map(ByteString::from),
                response_topic: p.response_topic.map(ByteString::from),
                correlation_data: p.correlation_data,
                user_properties: user_properties_from_stored(p.user_properties),
            },
        }
    }
}
