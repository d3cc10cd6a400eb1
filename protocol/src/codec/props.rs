//! MQTT 5.0 properties. [MQTT-2.2.2]
//!
//! A property list is a variable byte integer length followed by
//! `identifier, value` entries. Each packet accepts its own subset: an
//! identifier the specification defines for another packet is a protocol
//! error, an identifier it does not define at all is a malformed packet.
//! Properties that may appear once are a protocol error when repeated; user
//! properties keep their order and duplicates. [MQTT-3.3.2-18]

use bytes::Bytes;
use bytestring::ByteString;

use super::wire::{put_binary, put_string, put_varint, Counter, Reader, Sink, VARINT_MAX};
use super::{DecodeError, EncodeError};
use crate::packet::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UserProperty, WillProperties,
};

// Property identifiers. [MQTT-2.2.2.2]
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

const KNOWN: [u8; 27] = [
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    SUBSCRIPTION_IDENTIFIER,
    SESSION_EXPIRY_INTERVAL,
    ASSIGNED_CLIENT_IDENTIFIER,
    SERVER_KEEP_ALIVE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REQUEST_PROBLEM_INFORMATION,
    WILL_DELAY_INTERVAL,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    TOPIC_ALIAS,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    USER_PROPERTY,
    MAXIMUM_PACKET_SIZE,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
];

// ---------------------------------------------------------------- decoding

/// Iterates over one property list, handing out identifiers; the values are
/// read from [`Props::r`] by the per-packet decoders below.
struct Props {
    r: Reader,
}

impl Props {
    /// Splits the property list (length prefix included) off `r`.
    fn read(r: &mut Reader) -> Result<Props, DecodeError> {
        let len = r.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("property length"))?;
        Ok(Props { r: r.sub(len)? })
    }

    /// The next identifier, `None` at the end of the list.
    fn next_id(&mut self) -> Result<Option<u8>, DecodeError> {
        if self.r.is_empty() {
            return Ok(None);
        }
        let id = self.r.varint()?;
        // All identifiers defined by 5.0 fit in one byte. [MQTT-2.2.2.2]
        u8::try_from(id)
            .map(Some)
            .map_err(|_| DecodeError::Malformed("unknown property identifier"))
    }

    fn bool_byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        match self.r.u8()? {
            v @ (0 | 1) => Ok(v),
            _ => Err(DecodeError::Protocol(what)),
        }
    }

    fn nonzero_u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        match self.r.u16()? {
            0 => Err(DecodeError::Protocol(what)),
            v => Ok(v),
        }
    }

    fn nonzero_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match self.r.u32()? {
            0 => Err(DecodeError::Protocol(what)),
            v => Ok(v),
        }
    }
}

/// Stores a property that may appear at most once.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// The error for an identifier this packet does not accept.
fn unexpected(id: u8) -> DecodeError {
    if KNOWN.contains(&id) {
        DecodeError::Protocol("property not allowed in this packet")
    } else {
        DecodeError::Malformed("unknown property identifier")
    }
}

/// CONNECT properties. [MQTT-3.1.2.11]
pub(crate) fn connect(r: &mut Reader) -> Result<ConnectProperties, DecodeError> {
    let mut p = ConnectProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        let s = &mut props;
        match id {
            SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, s.r.u32()?)?,
            RECEIVE_MAXIMUM => once(&mut p.receive_maximum, s.nonzero_u16("receive maximum 0")?)?,
            MAXIMUM_PACKET_SIZE => once(
                &mut p.maximum_packet_size,
                s.nonzero_u32("maximum packet size 0")?,
            )?,
            TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, s.r.u16()?)?,
            REQUEST_RESPONSE_INFORMATION => once(
                &mut p.request_response_information,
                s.bool_byte("request response information not 0 or 1")?,
            )?,
            REQUEST_PROBLEM_INFORMATION => once(
                &mut p.request_problem_information,
                s.bool_byte("request problem information not 0 or 1")?,
            )?,
            USER_PROPERTY => p.user_properties.push(s.r.string_pair()?),
            AUTHENTICATION_METHOD => once(&mut p.authentication_method, s.r.string()?)?,
            AUTHENTICATION_DATA => once(&mut p.authentication_data, s.r.binary()?)?,
            other => return Err(unexpected(other)),
        }
    }
    // [MQTT-3.1.2.11.10]: authentication data without a method.
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol("authentication data without method"));
    }
    Ok(p)
}

/// Will properties of CONNECT. [MQTT-3.1.3.2]
pub(crate) fn will(r: &mut Reader) -> Result<WillProperties, DecodeError> {
    let mut p = WillProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        let s = &mut props;
        match id {
            WILL_DELAY_INTERVAL => once(&mut p.delay_interval, s.r.u32()?)?,
            PAYLOAD_FORMAT_INDICATOR => once(
                &mut p.payload_format_indicator,
                s.bool_byte("payload format indicator not 0 or 1")?,
            )?,
            MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, s.r.u32()?)?,
            CONTENT_TYPE => once(&mut p.content_type, s.r.string()?)?,
            RESPONSE_TOPIC => once(&mut p.response_topic, s.r.string()?)?,
            CORRELATION_DATA => once(&mut p.correlation_data, s.r.binary()?)?,
            USER_PROPERTY => p.user_properties.push(s.r.string_pair()?),
            other => return Err(unexpected(other)),
        }
    }
    Ok(p)
}

/// CONNACK properties. [MQTT-3.2.2.3]
pub(crate) fn connack(r: &mut Reader) -> Result<ConnAckProperties, DecodeError> {
    let mut p = ConnAckProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        if !connack_one(&mut p, id, &mut props)? {
            connack_two(&mut p, id, &mut props)?;
        }
    }
    Ok(p)
}

/// First half of the CONNACK properties; `false` if `id` is not among them.
fn connack_one(p: &mut ConnAckProperties, id: u8, s: &mut Props) -> Result<bool, DecodeError> {
    match id {
        SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, s.r.u32()?)?,
        RECEIVE_MAXIMUM => once(&mut p.receive_maximum, s.nonzero_u16("receive maximum 0")?)?,
        MAXIMUM_QOS => once(&mut p.maximum_qos, s.bool_byte("maximum qos not 0 or 1")?)?,
        RETAIN_AVAILABLE => once(
            &mut p.retain_available,
            s.bool_byte("retain available not 0 or 1")?,
        )?,
        MAXIMUM_PACKET_SIZE => once(
            &mut p.maximum_packet_size,
            s.nonzero_u32("maximum packet size 0")?,
        )?,
        ASSIGNED_CLIENT_IDENTIFIER => once(&mut p.assigned_client_identifier, s.r.string()?)?,
        TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, s.r.u16()?)?,
        REASON_STRING => once(&mut p.reason_string, s.r.string()?)?,
        USER_PROPERTY => p.user_properties.push(s.r.string_pair()?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Second half of the CONNACK properties.
fn connack_two(p: &mut ConnAckProperties, id: u8, s: &mut Props) -> Result<(), DecodeError> {
    match id {
        WILDCARD_SUBSCRIPTION_AVAILABLE => once(
            &mut p.wildcard_subscription_available,
            s.bool_byte("wildcard subscription available not 0 or 1")?,
        ),
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => once(
            &mut p.subscription_identifiers_available,
            s.bool_byte("subscription identifiers available not 0 or 1")?,
        ),
        SHARED_SUBSCRIPTION_AVAILABLE => once(
            &mut p.shared_subscription_available,
            s.bool_byte("shared subscription available not 0 or 1")?,
        ),
        SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, s.r.u16()?),
        RESPONSE_INFORMATION => once(&mut p.response_information, s.r.string()?),
        SERVER_REFERENCE => once(&mut p.server_reference, s.r.string()?),
        AUTHENTICATION_METHOD => once(&mut p.authentication_method, s.r.string()?),
        AUTHENTICATION_DATA => once(&mut p.authentication_data, s.r.binary()?),
        other => Err(unexpected(other)),
    }
}

/// PUBLISH properties. [MQTT-3.3.2.3]
pub(crate) fn publish(r: &mut Reader) -> Result<PublishProperties, DecodeError> {
    let mut p = PublishProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        let s = &mut props;
        match id {
            PAYLOAD_FORMAT_INDICATOR => once(
                &mut p.payload_format_indicator,
                s.bool_byte("payload format indicator not 0 or 1")?,
            )?,
            MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, s.r.u32()?)?,
            // A topic alias of 0 is not permitted. [MQTT-3.3.2-8]
            TOPIC_ALIAS => match s.r.u16()? {
                0 => return Err(DecodeError::TopicAliasInvalid),
                alias => once(&mut p.topic_alias, alias)?,
            },
            RESPONSE_TOPIC => once(&mut p.response_topic, s.r.string()?)?,
            CORRELATION_DATA => once(&mut p.correlation_data, s.r.binary()?)?,
            USER_PROPERTY => p.user_properties.push(s.r.string_pair()?),
            // May repeat on a PUBLISH to a subscriber. [MQTT-3.3.4-3]
            SUBSCRIPTION_IDENTIFIER => p.subscription_identifiers.push(subscription_id(s)?),
            CONTENT_TYPE => once(&mut p.content_type, s.r.string()?)?,
            other => return Err(unexpected(other)),
        }
    }
    Ok(p)
}

/// A subscription identifier: 1 to 268,435,455; 0 is a protocol error.
/// [MQTT-3.8.2.1.2]
fn subscription_id(s: &mut Props) -> Result<u32, DecodeError> {
    match s.r.varint()? {
        0 => Err(DecodeError::Protocol("subscription identifier 0")),
        v => Ok(v),
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
pub(crate) fn ack(r: &mut Reader) -> Result<AckProperties, DecodeError> {
    let mut p = AckProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        match id {
            REASON_STRING => once(&mut p.reason_string, props.r.string()?)?,
            USER_PROPERTY => p.user_properties.push(props.r.string_pair()?),
            other => return Err(unexpected(other)),
        }
    }
    Ok(p)
}

/// SUBSCRIBE properties. [MQTT-3.8.2.1]
pub(crate) fn subscribe(r: &mut Reader) -> Result<SubscribeProperties, DecodeError> {
    let mut p = SubscribeProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        match id {
            SUBSCRIPTION_IDENTIFIER => {
                let v = subscription_id(&mut props)?;
                once(&mut p.subscription_identifier, v)?;
            }
            USER_PROPERTY => p.user_properties.push(props.r.string_pair()?),
            other => return Err(unexpected(other)),
        }
    }
    Ok(p)
}

/// UNSUBSCRIBE properties: user properties only. [MQTT-3.10.2.1]
pub(crate) fn unsubscribe(r: &mut Reader) -> Result<Vec<UserProperty>, DecodeError> {
    let mut users = Vec::new();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        match id {
            USER_PROPERTY => users.push(props.r.string_pair()?),
            other => return Err(unexpected(other)),
        }
    }
    Ok(users)
}

/// DISCONNECT properties. [MQTT-3.14.2.2]
pub(crate) fn disconnect(r: &mut Reader) -> Result<DisconnectProperties, DecodeError> {
    let mut p = DisconnectProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        let s = &mut props;
        match id {
            SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, s.r.u32()?)?,
            REASON_STRING => once(&mut p.reason_string, s.r.string()?)?,
            USER_PROPERTY => p.user_properties.push(s.r.string_pair()?),
            SERVER_REFERENCE => once(&mut p.server_reference, s.r.string()?)?,
            other => return Err(unexpected(other)),
        }
    }
    Ok(p)
}

/// AUTH properties. [MQTT-3.15.2.2]
pub(crate) fn auth(r: &mut Reader) -> Result<AuthProperties, DecodeError> {
    let mut p = AuthProperties::default();
    let mut props = Props::read(r)?;
    while let Some(id) = props.next_id()? {
        let s = &mut props;
        match id {
            AUTHENTICATION_METHOD => once(&mut p.authentication_method, s.r.string()?)?,
            AUTHENTICATION_DATA => once(&mut p.authentication_data, s.r.binary()?)?,
            REASON_STRING => once(&mut p.reason_string, s.r.string()?)?,
            USER_PROPERTY => p.user_properties.push(s.r.string_pair()?),
            other => return Err(unexpected(other)),
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------- encoding

/// A property set the encoder can write. Writing the same value to a
/// [`Counter`] and to a buffer yields the same number of bytes, which is how
/// the property length prefix is computed.
pub(crate) trait WriteProps {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError>;
}

/// Length of the property list of `p`, without its length prefix.
pub(crate) fn len<P: WriteProps + ?Sized>(p: &P) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    p.write(&mut counter)?;
    Ok(counter.0)
}

/// Writes the property length, then the properties.
pub(crate) fn put<W: Sink, P: WriteProps + ?Sized>(w: &mut W, p: &P) -> Result<(), EncodeError> {
    put_varint(w, len(p)?)?;
    p.write(w)
}

fn check(ok: bool, what: &'static str) -> Result<(), EncodeError> {
    if ok {
        Ok(())
    } else {
        Err(EncodeError::Invalid(what))
    }
}

fn byte<W: Sink>(w: &mut W, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        w.put_u8(id);
        w.put_u8(v);
    }
}

/// A byte property that only admits 0 or 1.
fn bool_byte<W: Sink>(w: &mut W, id: u8, v: Option<u8>) -> Result<(), EncodeError> {
    check(v.is_none_or(|v| v <= 1), "property value must be 0 or 1")?;
    byte(w, id, v);
    Ok(())
}

fn two<W: Sink>(w: &mut W, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        w.put_u8(id);
        w.put_u16(v);
    }
}

fn four<W: Sink>(w: &mut W, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        w.put_u8(id);
        w.put_u32(v);
    }
}

fn string<W: Sink>(w: &mut W, id: u8, v: &Option<ByteString>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        w.put_u8(id);
        put_string(w, v)?;
    }
    Ok(())
}

fn binary<W: Sink>(w: &mut W, id: u8, v: &Option<Bytes>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        w.put_u8(id);
        put_binary(w, v)?;
    }
    Ok(())
}

fn users<W: Sink>(w: &mut W, users: &[UserProperty]) -> Result<(), EncodeError> {
    for (key, value) in users {
        w.put_u8(USER_PROPERTY);
        put_string(w, key)?;
        put_string(w, value)?;
    }
    Ok(())
}

fn subscription_ids<W: Sink>(w: &mut W, ids: &[u32]) -> Result<(), EncodeError> {
    for &id in ids {
        check(
            (1..=VARINT_MAX).contains(&id),
            "subscription identifier out of range",
        )?;
        w.put_u8(SUBSCRIPTION_IDENTIFIER);
        put_varint(w, id as usize)?;
    }
    Ok(())
}

impl WriteProps for ConnectProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        check(self.receive_maximum != Some(0), "receive maximum 0")?;
        check(self.maximum_packet_size != Some(0), "maximum packet size 0")?;
        check(
            self.authentication_data.is_none() || self.authentication_method.is_some(),
            "authentication data without method",
        )?;
        four(w, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        two(w, RECEIVE_MAXIMUM, self.receive_maximum);
        four(w, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        two(w, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        bool_byte(
            w,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        )?;
        bool_byte(
            w,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        )?;
        users(w, &self.user_properties)?;
        string(w, AUTHENTICATION_METHOD, &self.authentication_method)?;
        binary(w, AUTHENTICATION_DATA, &self.authentication_data)
    }
}

impl WriteProps for WillProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        four(w, WILL_DELAY_INTERVAL, self.delay_interval);
        bool_byte(w, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator)?;
        four(w, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        string(w, CONTENT_TYPE, &self.content_type)?;
        string(w, RESPONSE_TOPIC, &self.response_topic)?;
        binary(w, CORRELATION_DATA, &self.correlation_data)?;
        users(w, &self.user_properties)
    }
}

impl WriteProps for ConnAckProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        check(self.receive_maximum != Some(0), "receive maximum 0")?;
        check(self.maximum_packet_size != Some(0), "maximum packet size 0")?;
        four(w, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        two(w, RECEIVE_MAXIMUM, self.receive_maximum);
        bool_byte(w, MAXIMUM_QOS, self.maximum_qos)?;
        bool_byte(w, RETAIN_AVAILABLE, self.retain_available)?;
        four(w, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        string(
            w,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        two(w, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        string(w, REASON_STRING, &self.reason_string)?;
        users(w, &self.user_properties)?;
        let wildcard = self.wildcard_subscription_available;
        bool_byte(w, WILDCARD_SUBSCRIPTION_AVAILABLE, wildcard)?;
        let sub_ids = self.subscription_identifiers_available;
        bool_byte(w, SUBSCRIPTION_IDENTIFIER_AVAILABLE, sub_ids)?;
        let shared = self.shared_subscription_available;
        bool_byte(w, SHARED_SUBSCRIPTION_AVAILABLE, shared)?;
        two(w, SERVER_KEEP_ALIVE, self.server_keep_alive);
        string(w, RESPONSE_INFORMATION, &self.response_information)?;
        string(w, SERVER_REFERENCE, &self.server_reference)?;
        string(w, AUTHENTICATION_METHOD, &self.authentication_method)?;
        binary(w, AUTHENTICATION_DATA, &self.authentication_data)
    }
}

impl WriteProps for PublishProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        check(self.topic_alias != Some(0), "topic alias 0")?;
        bool_byte(w, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator)?;
        four(w, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        two(w, TOPIC_ALIAS, self.topic_alias);
        string(w, RESPONSE_TOPIC, &self.response_topic)?;
        binary(w, CORRELATION_DATA, &self.correlation_data)?;
        users(w, &self.user_properties)?;
        subscription_ids(w, &self.subscription_identifiers)?;
        string(w, CONTENT_TYPE, &self.content_type)
    }
}

impl WriteProps for AckProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        string(w, REASON_STRING, &self.reason_string)?;
        users(w, &self.user_properties)
    }
}

impl WriteProps for SubscribeProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        let ids = self.subscription_identifier.as_slice();
        subscription_ids(w, ids)?;
        users(w, &self.user_properties)
    }
}

impl WriteProps for [UserProperty] {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        users(w, self)
    }
}

impl WriteProps for DisconnectProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        four(w, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        string(w, REASON_STRING, &self.reason_string)?;
        users(w, &self.user_properties)?;
        string(w, SERVER_REFERENCE, &self.server_reference)
    }
}

impl WriteProps for AuthProperties {
    fn write<W: Sink>(&self, w: &mut W) -> Result<(), EncodeError> {
        string(w, AUTHENTICATION_METHOD, &self.authentication_method)?;
        binary(w, AUTHENTICATION_DATA, &self.authentication_data)?;
        string(w, REASON_STRING, &self.reason_string)?;
        users(w, &self.user_properties)
    }
}
