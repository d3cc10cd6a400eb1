//! Encoding. Every body is written twice through the same code: into a
//! [`Counter`] to learn the remaining length (and catch every error before a
//! byte is appended), then into the buffer.

use bytes::BytesMut;

use super::props::{self, WriteProps};
use super::wire::{put_binary, put_string, put_varint, varint_len, Counter, Sink, VARINT_MAX};
use super::*;
use crate::packet::{
    reason, Ack, Auth, ConnAck, Connect, Disconnect, QoS, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

/// Something with a fixed header and a body.
pub(super) trait Body {
    fn first_byte(&self) -> u8;
    fn write<W: Sink>(&self, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError>;
}

/// Appends fixed header and body to `buf`; appends nothing on error.
pub(super) fn framed<B: Body>(
    body: &B,
    v: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    body.write(v, &mut counter)?;
    let len = counter.0;
    if len > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge(len));
    }
    let start = buf.len();
    buf.reserve(1 + varint_len(len) + len);
    buf.put_u8(body.first_byte());
    let written = put_varint(buf, len).and_then(|()| body.write(v, buf));
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

fn check(ok: bool, what: &'static str) -> Result<(), EncodeError> {
    if ok {
        Ok(())
    } else {
        Err(EncodeError::Invalid(what))
    }
}

impl Body for Packet {
    fn first_byte(&self) -> u8 {
        let kind = match self {
            Packet::Publish(p) => return p.first_byte(),
            // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
            Packet::PubRel(_) => return PUBREL << 4 | 0b0010,
            Packet::Subscribe(_) => return SUBSCRIBE << 4 | 0b0010,
            Packet::Unsubscribe(_) => return UNSUBSCRIBE << 4 | 0b0010,
            Packet::Connect(_) => CONNECT,
            Packet::ConnAck(_) => CONNACK,
            Packet::PubAck(_) => PUBACK,
            Packet::PubRec(_) => PUBREC,
            Packet::PubComp(_) => PUBCOMP,
            Packet::SubAck(_) => SUBACK,
            Packet::UnsubAck(_) => UNSUBACK,
            Packet::PingReq => PINGREQ,
            Packet::PingResp => PINGRESP,
            Packet::Disconnect(_) => DISCONNECT,
            Packet::Auth(_) => AUTH,
        };
        kind << 4
    }

    fn write<W: Sink>(&self, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(c) => connect(c, v, w),
            Packet::ConnAck(c) => connack(c, v, w),
            Packet::Publish(p) => p.write(v, w),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                ack(a, v, w)
            }
            Packet::Subscribe(s) => subscribe(s, v, w),
            Packet::SubAck(s) => suback(s, v, w),
            Packet::Unsubscribe(u) => unsubscribe(u, v, w),
            Packet::UnsubAck(u) => unsuback(u, v, w),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(d) => disconnect(d, v, w),
            Packet::Auth(a) => auth(a, v, w),
        }
    }
}

impl Body for Publish {
    /// DUP is only written for QoS > 0. [MQTT-3.3.1-2]
    fn first_byte(&self) -> u8 {
        let dup = self.dup && self.qos != QoS::AtMostOnce;
        PUBLISH << 4 | u8::from(dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    fn write<W: Sink>(&self, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
        let has_alias = v == ProtocolVersion::V5 && self.properties.topic_alias.is_some();
        // [MQTT-4.7.3-1] [MQTT-3.3.2.1]
        check(
            !self.topic.is_empty() || has_alias,
            "empty topic without alias",
        )?;
        put_string(w, &self.topic)?;
        if self.qos != QoS::AtMostOnce {
            // [MQTT-2.2.1-3]
            check(self.packet_id != 0, "packet identifier 0")?;
            w.put_u16(self.packet_id);
        }
        if v == ProtocolVersion::V5 {
            props::put(w, &self.properties)?;
        }
        w.put(&self.payload);
        Ok(())
    }
}

/// CONNECT; `c.protocol` must be the version being written. [MQTT-3.1]
fn connect<W: Sink>(c: &Connect, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    check(
        c.protocol == v,
        "CONNECT protocol differs from the encoding version",
    )?;
    put_string(w, "MQTT")?;
    w.put_u8(v.level());
    w.put_u8(connect_flags(c, v)?);
    w.put_u16(c.keep_alive);
    if v == ProtocolVersion::V5 {
        props::put(w, &c.properties)?;
    }
    put_string(w, &c.client_id)?;
    if let Some(will) = &c.will {
        if v == ProtocolVersion::V5 {
            props::put(w, &will.properties)?;
        }
        put_string(w, &will.topic)?;
        put_binary(w, &will.payload)?;
    }
    if let Some(username) = &c.username {
        put_string(w, username)?;
    }
    if let Some(password) = &c.password {
        put_binary(w, password)?;
    }
    Ok(())
}

/// The CONNECT flags byte. [MQTT-3.1.2.3]
fn connect_flags(c: &Connect, v: ProtocolVersion) -> Result<u8, EncodeError> {
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
    }
    if c.password.is_some() {
        // [MQTT-3.1.2-22] (3.1.1)
        let allowed = v == ProtocolVersion::V5 || c.username.is_some();
        check(allowed, "password without user name in MQTT 3.1.1")?;
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    Ok(flags)
}

/// CONNACK. Session present is only written with success. [MQTT-3.2.2-6]
fn connack<W: Sink>(c: &ConnAck, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    let code = match v {
        ProtocolVersion::V5 => c.code,
        ProtocolVersion::V311 => v311_connack_code(c.code),
    };
    w.put_u8(u8::from(c.session_present && code == reason::SUCCESS));
    w.put_u8(code);
    if v == ProtocolVersion::V5 {
        props::put(w, &c.properties)?;
    }
    Ok(())
}

/// Maps a 5.0 CONNACK reason code to a 3.1.1 return code. [MQTT-3.2.2.3]
fn v311_connack_code(code: u8) -> u8 {
    match code {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 2,
        reason::BAD_USER_NAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED | reason::BANNED | reason::BAD_AUTHENTICATION_METHOD => 5,
        // Server unavailable, busy, quota exceeded and any other failure.
        _ => 3,
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP, in their shortest form. [MQTT-3.4.2.1]
fn ack<W: Sink>(a: &Ack, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    w.put_u16(a.packet_id);
    if v == ProtocolVersion::V311 {
        return Ok(());
    }
    reason_and_props(a.reason, &a.properties, w)
}

/// The optional 5.0 tail shared by acks, DISCONNECT and AUTH: nothing for
/// success without properties, a lone reason code without properties.
fn reason_and_props<W: Sink, P: WriteProps>(
    code: u8,
    properties: &P,
    w: &mut W,
) -> Result<(), EncodeError> {
    let props_len = props::len(properties)?;
    if code == reason::SUCCESS && props_len == 0 {
        return Ok(());
    }
    w.put_u8(code);
    if props_len > 0 {
        props::put(w, properties)?;
    }
    Ok(())
}

/// SUBSCRIBE. [MQTT-3.8]
fn subscribe<W: Sink>(s: &Subscribe, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    check(s.packet_id != 0, "packet identifier 0")?; // [MQTT-2.2.1-3]
    check(!s.filters.is_empty(), "SUBSCRIBE without topic filters")?; // [MQTT-3.8.3-2]
    w.put_u16(s.packet_id);
    if v == ProtocolVersion::V5 {
        props::put(w, &s.properties)?;
    }
    for f in &s.filters {
        put_string(w, &f.filter)?;
        w.put_u8(options_byte(&f.options, v));
    }
    Ok(())
}

/// The subscription options byte; 3.1.1 only has the QoS. [MQTT-3.8.3.1]
fn options_byte(o: &SubscriptionOptions, v: ProtocolVersion) -> u8 {
    let qos = o.qos as u8;
    match v {
        ProtocolVersion::V311 => qos,
        ProtocolVersion::V5 => {
            qos | u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4
        }
    }
}

/// SUBACK; 3.1.1 knows a single failure code, 0x80. [MQTT-3.9.3]
fn suback<W: Sink>(s: &SubAck, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    check(!s.reason_codes.is_empty(), "SUBACK without reason codes")?;
    w.put_u16(s.packet_id);
    match v {
        ProtocolVersion::V5 => {
            props::put(w, &s.properties)?;
            w.put(&s.reason_codes);
        }
        ProtocolVersion::V311 => {
            for &code in &s.reason_codes {
                w.put_u8(if code <= 2 {
                    code
                } else {
                    reason::UNSPECIFIED_ERROR
                });
            }
        }
    }
    Ok(())
}

/// UNSUBSCRIBE. [MQTT-3.10]
fn unsubscribe<W: Sink>(u: &Unsubscribe, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    check(u.packet_id != 0, "packet identifier 0")?; // [MQTT-2.2.1-3]
    check(!u.filters.is_empty(), "UNSUBSCRIBE without topic filters")?; // [MQTT-3.10.3-2]
    w.put_u16(u.packet_id);
    if v == ProtocolVersion::V5 {
        props::put(w, u.user_properties.as_slice())?;
    }
    for filter in &u.filters {
        put_string(w, filter)?;
    }
    Ok(())
}

/// UNSUBACK; 3.1.1 has no reason codes. [MQTT-3.11]
fn unsuback<W: Sink>(u: &UnsubAck, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    w.put_u16(u.packet_id);
    if v == ProtocolVersion::V5 {
        check(!u.reason_codes.is_empty(), "UNSUBACK without reason codes")?;
        props::put(w, &u.properties)?;
        w.put(&u.reason_codes);
    }
    Ok(())
}

/// DISCONNECT in its shortest form; empty in 3.1.1. [MQTT-3.14.2.1]
fn disconnect<W: Sink>(d: &Disconnect, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    match v {
        ProtocolVersion::V311 => Ok(()),
        ProtocolVersion::V5 => reason_and_props(d.reason, &d.properties, w),
    }
}

/// AUTH in its shortest form; 5.0 only. [MQTT-3.15.2.1]
fn auth<W: Sink>(a: &Auth, v: ProtocolVersion, w: &mut W) -> Result<(), EncodeError> {
    check(v == ProtocolVersion::V5, "AUTH is MQTT 5.0 only")?;
    reason_and_props(a.reason, &a.properties, w)
}
