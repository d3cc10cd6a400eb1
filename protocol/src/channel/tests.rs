//! Channel tests: feed decoded packets to a [`Channel`] and assert the exact
//! effects it asks the connection actor to carry out.
//!
//! `connect.rs`: CONNECT validation, the CONNACK, the states around them.
//! `inbound.rs`: PUBLISH, acknowledgements, topic aliases, AUTH, PINGREQ.
//! `subscribe.rs`: SUBSCRIBE / UNSUBSCRIBE, SUBACK / UNSUBACK.
//! `disconnect.rs`: DISCONNECT and keep alive.

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::*;

mod connect;
mod disconnect;
mod inbound;
mod subscribe;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// The id the channel gives a client that sent an empty one.
const ASSIGNED: &str = "roost-assigned-1";

fn new_channel(config: ChannelConfig) -> (Channel, Instant) {
    let now = Instant::now();
    (Channel::new(config, ClientId::new(ASSIGNED), now), now)
}

/// A CONNECT with no will, credentials or properties.
fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    keep_alive: u16,
) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn will(topic: &str, qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(b"gone"),
        qos,
        retain,
        properties: WillProperties::default(),
    }
}

/// Feed one packet, return the effects it produced.
fn feed(ch: &mut Channel, packet: Packet, now: Instant) -> Vec<Effect> {
    let mut out = Vec::new();
    ch.handle_in(packet, now, &mut out);
    out
}

/// Feed a CONNECT and return the single `Effect::Connect` it must produce.
fn accept(ch: &mut Channel, c: Connect, now: Instant) -> ConnectInfo {
    let mut effects = feed(ch, Packet::Connect(Box::new(c)), now);
    assert_eq!(effects.len(), 1, "{effects:?}");
    match effects.pop() {
        Some(Effect::Connect(info)) => *info,
        other => panic!("expected Effect::Connect, got {other:?}"),
    }
}

/// Call `connack` and return the CONNACK it sends.
fn connack(ch: &mut Channel, session_present: bool, info: &ConnectInfo) -> ConnAck {
    let mut out = Vec::new();
    ch.connack(session_present, info, &mut out);
    match out.as_slice() {
        [Effect::Send(Packet::ConnAck(ack))] => ack.clone(),
        other => panic!("expected one CONNACK, got {other:?}"),
    }
}

/// A channel past CONNECT and CONNACK for client "c1" (keep alive 10 s).
fn connected_with(version: ProtocolVersion, config: ChannelConfig) -> (Channel, Instant) {
    let (mut ch, now) = new_channel(config);
    let info = accept(&mut ch, connect_packet(version, "c1", true, 10), now);
    connack(&mut ch, false, &info);
    assert_eq!(ch.state(), ChannelState::Connected);
    (ch, now)
}

fn connected(version: ProtocolVersion) -> (Channel, Instant) {
    connected_with(version, ChannelConfig::default())
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Publish {
    Publish {
        qos,
        topic: ByteString::from(topic),
        packet_id,
        payload: Bytes::from_static(b"payload"),
        ..Publish::default()
    }
}

fn with_alias(mut p: Publish, alias: u16) -> Publish {
    p.properties.topic_alias = Some(alias);
    p
}

/// The message the channel routes for `p` from client "c1".
fn routed(p: &Publish, now: Instant) -> Message {
    Message::from_publish(p.clone(), ClientId::new("c1"), now)
}

fn close(code: Option<u8>) -> Vec<Effect> {
    vec![Effect::Close { reason: code }]
}

/// The CONNACK + Close of a refused CONNECT. [MQTT-3.2.2-6]
fn refused(code: u8) -> Vec<Effect> {
    vec![
        Effect::Send(Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: ConnAckProperties::default(),
        })),
        Effect::Close { reason: None },
    ]
}
