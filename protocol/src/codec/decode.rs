//! Decoding of complete frames. The fixed header has been checked by
//! `super::check_first_byte`; `frame` is the variable header and payload.

use bytes::Bytes;
use bytestring::ByteString;

use super::wire::Reader;
use super::*;
use crate::packet::{
    reason, Ack, Auth, ConnAck, Connect, Disconnect, LastWill, QoS, RetainHandling, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// Decodes the body of one packet whose first byte is `first`.
pub(super) fn packet(
    first: u8,
    frame: Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(frame);
    let kind = first >> 4;
    let packet = match (kind, version) {
        (CONNECT, _) => Packet::Connect(Box::new(connect(&mut r)?)),
        (_, None) => return Err(DecodeError::Protocol("first packet must be CONNECT")),
        (_, Some(v)) => after_connect(kind, first, &mut r, v)?,
    };
    r.finish()?;
    Ok(packet)
}

fn after_connect(
    kind: u8,
    first: u8,
    r: &mut Reader,
    v: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match kind {
        CONNACK => Packet::ConnAck(connack(r, v)?),
        PUBLISH => Packet::Publish(publish(first, r, v)?),
        PUBACK => Packet::PubAck(ack(r, v)?),
        PUBREC => Packet::PubRec(ack(r, v)?),
        PUBREL => Packet::PubRel(ack(r, v)?),
        PUBCOMP => Packet::PubComp(ack(r, v)?),
        SUBSCRIBE => Packet::Subscribe(subscribe(r, v)?),
        SUBACK => Packet::SubAck(suback(r, v)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(r, v)?),
        UNSUBACK => Packet::UnsubAck(unsuback(r, v)?),
        // Remaining length 0, checked by `finish`. [MQTT-3.12.1] [MQTT-3.13.1]
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect(disconnect(r, v)?),
        AUTH if v == ProtocolVersion::V5 => Packet::Auth(auth(r)?),
        _ => return Err(DecodeError::Malformed("reserved packet type")),
    })
}

/// A packet identifier that must not be 0. [MQTT-2.2.1-3]
fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// CONNECT. [MQTT-3.1]
fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = protocol_version(&name, level)?;
    let flags = ConnectFlags::parse(r.u8()?, protocol)?;
    let keep_alive = r.u16()?;
    let properties = match protocol {
        ProtocolVersion::V5 => props::connect(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    // [MQTT-3.1.3-1]: client id, will, user name, password, in this order.
    let client_id = r.string()?;
    let will = match flags.will {
        Some((qos, retain)) => Some(will(r, protocol, qos, retain)?),
        None => None,
    };
    let username = flags.username.then(|| r.string()).transpose()?;
    let password = flags.password.then(|| r.binary()).transpose()?;
    Ok(Connect {
        protocol,
        clean_start: flags.clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// The protocol name must be "MQTT" [MQTT-3.1.2-1]; the level 4 or 5
/// [MQTT-3.1.2-2]. MQTT 3.1 ("MQIsdp", level 3) is reported as an
/// unsupported version so the channel can answer with a CONNACK.
fn protocol_version(name: &ByteString, level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (&**name, level) {
        ("MQTT", 4) => Ok(ProtocolVersion::V311),
        ("MQTT", 5) => Ok(ProtocolVersion::V5),
        ("MQTT" | "MQIsdp", _) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => Err(DecodeError::Protocol("protocol name is not MQTT")),
    }
}

/// The CONNECT flags byte. [MQTT-3.1.2.3]
struct ConnectFlags {
    clean_start: bool,
    /// Will QoS and retain, when the will flag is set.
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl ConnectFlags {
    fn parse(byte: u8, protocol: ProtocolVersion) -> Result<ConnectFlags, DecodeError> {
        if byte & 0x01 != 0 {
            // [MQTT-3.1.2-3]
            return Err(DecodeError::Malformed("CONNECT reserved flag set"));
        }
        let will_qos = (byte >> 3) & 0b11;
        let will_retain = byte & 0x20 != 0;
        let will = if byte & 0x04 != 0 {
            // [MQTT-3.1.2-12]
            let qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
            Some((qos, will_retain))
        } else if will_qos != 0 || will_retain {
            // [MQTT-3.1.2-11] [MQTT-3.1.2-13]
            return Err(DecodeError::Malformed(
                "will QoS or retain without will flag",
            ));
        } else {
            None
        };
        let username = byte & 0x80 != 0;
        let password = byte & 0x40 != 0;
        if protocol == ProtocolVersion::V311 && password && !username {
            // [MQTT-3.1.2-22] (3.1.1 only; 5.0 allows a password alone)
            return Err(DecodeError::Malformed(
                "password flag without user name flag",
            ));
        }
        Ok(ConnectFlags {
            clean_start: byte & 0x02 != 0,
            will,
            username,
            password,
        })
    }
}

/// The will part of the CONNECT payload. [MQTT-3.1.3.2] .. [MQTT-3.1.3.4]
fn will(
    r: &mut Reader,
    protocol: ProtocolVersion,
    qos: QoS,
    retain: bool,
) -> Result<LastWill, DecodeError> {
    let properties = match protocol {
        ProtocolVersion::V5 => props::will(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    let topic = r.string()?;
    let payload = r.binary()?;
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

/// CONNACK. [MQTT-3.2]
fn connack(r: &mut Reader, v: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        // [MQTT-3.2.2-1]
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let session_present = flags == 1;
    let code = match v {
        ProtocolVersion::V5 => r.u8()?,
        ProtocolVersion::V311 => v311_connack_code(r.u8()?)?,
    };
    if session_present && code != reason::SUCCESS {
        // [MQTT-3.2.2-6]
        return Err(DecodeError::Protocol(
            "session present on a refused connection",
        ));
    }
    let properties = match v {
        ProtocolVersion::V5 => props::connack(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

/// 3.1.1 CONNACK return codes as 5.0 reason codes. [MQTT-3.2.2.3] (3.1.1)
fn v311_connack_code(code: u8) -> Result<u8, DecodeError> {
    Ok(match code {
        0 => reason::SUCCESS,
        1 => reason::UNSUPPORTED_PROTOCOL_VERSION,
        2 => reason::CLIENT_IDENTIFIER_NOT_VALID,
        3 => reason::SERVER_UNAVAILABLE,
        4 => reason::BAD_USER_NAME_OR_PASSWORD,
        5 => reason::NOT_AUTHORIZED,
        _ => return Err(DecodeError::Malformed("reserved CONNACK return code")),
    })
}

/// PUBLISH; the QoS in `first` has been checked. [MQTT-3.3]
fn publish(first: u8, r: &mut Reader, v: ProtocolVersion) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((first >> 1) & 0b11).ok_or(DecodeError::Malformed("QoS 3"))?;
    let topic = r.string()?;
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce | QoS::ExactlyOnce => packet_id(r)?,
    };
    let properties = match v {
        ProtocolVersion::V5 => props::publish(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    // [MQTT-4.7.3-1]; in 5.0 an empty topic needs a topic alias [MQTT-3.3.2.1]
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::Protocol(
            "empty topic name without topic alias",
        ));
    }
    Ok(Publish {
        dup: first & 0b1000 != 0,
        qos,
        retain: first & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 a remaining length of 2 means
/// success without properties, 3 a reason code alone. [MQTT-3.4.2.1]
fn ack(r: &mut Reader, v: ProtocolVersion) -> Result<Ack, DecodeError> {
    let packet_id = r.u16()?;
    if v == ProtocolVersion::V311 || r.is_empty() {
        return Ok(Ack::new(packet_id));
    }
    let reason = r.u8()?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        props::ack(r)?
    };
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// SUBSCRIBE. [MQTT-3.8]
fn subscribe(r: &mut Reader, v: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match v {
        ProtocolVersion::V5 => props::subscribe(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1)
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The subscription options byte. [MQTT-3.8.3.1]
fn subscription_options(byte: u8, v: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = match v {
        ProtocolVersion::V311 => 0xFC, // [MQTT-3.8.3-4] (3.1.1)
        ProtocolVersion::V5 => 0xC0,   // [MQTT-3.8.3-5]
    };
    if byte & reserved != 0 {
        return Err(DecodeError::Malformed(
            "subscription options reserved bits set",
        ));
    }
    // 5.0 calls QoS 3 and retain handling 3 protocol errors. [MQTT-3.8.3.1]
    let qos = match QoS::from_u8(byte & 0b11) {
        Some(qos) => qos,
        None if v == ProtocolVersion::V311 => return Err(DecodeError::Malformed("QoS 3")),
        None => return Err(DecodeError::Protocol("subscription QoS 3")),
    };
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::Protocol("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

/// SUBACK. [MQTT-3.9]
fn suback(r: &mut Reader, v: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = r.u16()?;
    let properties = match v {
        ProtocolVersion::V5 => props::ack(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    let reason_codes = r.rest().to_vec();
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without reason codes"));
    }
    let valid_v311 = |c: &u8| matches!(c, 0..=2 | 0x80);
    if v == ProtocolVersion::V311 && !reason_codes.iter().all(valid_v311) {
        // [MQTT-3.9.3-2] (3.1.1)
        return Err(DecodeError::Malformed("reserved SUBACK return code"));
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

/// UNSUBSCRIBE. [MQTT-3.10]
fn unsubscribe(r: &mut Reader, v: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let user_properties = match v {
        ProtocolVersion::V5 => props::unsubscribe(r)?,
        ProtocolVersion::V311 => Vec::new(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2]
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

/// UNSUBACK; 3.1.1 has only the packet identifier. [MQTT-3.11]
fn unsuback(r: &mut Reader, v: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.u16()?;
    if v == ProtocolVersion::V311 {
        return Ok(UnsubAck {
            packet_id,
            ..UnsubAck::default()
        });
    }
    let properties = props::ack(r)?;
    let reason_codes = r.rest().to_vec();
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

/// DISCONNECT. In 5.0 a remaining length of 0 is a normal disconnection, 1
/// a reason code alone. [MQTT-3.14.2.1] 3.1.1 has no variable header.
fn disconnect(r: &mut Reader, v: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    if v == ProtocolVersion::V311 || r.is_empty() {
        return Ok(Disconnect::default());
    }
    let reason = r.u8()?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        props::disconnect(r)?
    };
    Ok(Disconnect { reason, properties })
}

/// AUTH (5.0). Remaining length 0 means success without properties.
/// [MQTT-3.15.2.1]
fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    if r.is_empty() {
        return Ok(Auth::default());
    }
    let reason = r.u8()?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        props::auth(r)?
    };
    Ok(Auth { reason, properties })
}
