//! The per-connection MQTT state machine (EMQX's `emqx_channel`).
//!
//! `Channel::handle_in(packet, now, &mut effects)` takes one decoded packet
//! from the client and appends the [`Effect`]s the connection actor must
//! carry out: packets to send, a session to open, a message to route, a
//! subscription to make, the connection to close. Protocol violations are
//! effects too (a DISCONNECT or CONNACK with a reason code, then `Close`),
//! never panics.
//!
//! The channel owns the *inbound* half of the protocol: CONNECT validation,
//! keep alive, inbound topic aliases, the inbound QoS 2 state (packet ids
//! awaiting PUBREL) and the inbound Receive Maximum. The outbound half lives in
//! [`crate::session::SessionState`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::message::{ClientId, Message};
use crate::packet::*;
use crate::session::Subscription;
use crate::topic;

/// Broker limits and features, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub max_packet_size: u32,
    pub max_client_id_len: usize,
    /// The Receive Maximum we announce: inbound QoS 1/2 publishes the client
    /// may have unacknowledged. [MQTT-3.3.4-7]
    pub receive_maximum: u16,
    pub max_topic_alias: u16,
    pub max_topic_levels: usize,
    pub max_qos: QoS,
    pub retain_available: bool,
    pub wildcard_subscriptions: bool,
    pub shared_subscriptions: bool,
    pub subscription_identifiers: bool,
    /// Server Keep Alive: overrides the client's value when set. [MQTT-3.2.2-21]
    pub server_keep_alive: Option<u16>,
    pub keep_alive_multiplier: f64,
    /// Cap on the Session Expiry Interval a client may ask for, seconds.
    pub max_session_expiry: u32,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_packet_size: 1024 * 1024,
            max_client_id_len: 65535,
            receive_maximum: 32,
            max_topic_alias: 65535,
            max_topic_levels: 128,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            server_keep_alive: None,
            keep_alive_multiplier: 1.5,
            max_session_expiry: 7200,
        }
    }
}

/// A validated CONNECT: what the broker needs to open or resume the session.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectInfo {
    pub version: ProtocolVersion,
    pub client_id: ClientId,
    /// The server assigned the client id (empty id in CONNECT).
    pub assigned: bool,
    pub clean_start: bool,
    /// Seconds the session outlives the connection (0 = ends with it).
    pub session_expiry: u32,
    pub will: Option<LastWill>,
    pub username: Option<ByteString>,
    /// Effective keep alive, seconds (0 = disabled).
    pub keep_alive: u16,
    /// The client's limits for what we send it.
    pub receive_maximum: u16,
    pub maximum_packet_size: u32,
    pub topic_alias_maximum: u16,
}

/// One filter of a SUBSCRIBE, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub filter: ByteString,
    pub subscription: Subscription,
    /// Set when the filter is refused: the SUBACK reason code for it.
    pub refused: Option<u8>,
}

/// What the connection actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a packet to the client.
    Send(Packet),
    /// CONNECT accepted: open or resume the session, then call
    /// [`Channel::connack`] (or [`Channel::reject`]).
    Connect(Box<ConnectInfo>),
    /// Route an application message.
    Publish(Message),
    /// SUBSCRIBE: the session applies the accepted filters and answers SUBACK.
    Subscribe {
        packet_id: u16,
        requests: Vec<SubscribeRequest>,
    },
    /// UNSUBSCRIBE: the session answers UNSUBACK.
    Unsubscribe {
        packet_id: u16,
        filters: Vec<ByteString>,
    },
    /// Acknowledgements for the session's outbound window.
    PubAck(u16),
    PubRec {
        packet_id: u16,
        reason: u8,
    },
    PubComp(u16),
    /// The client sent DISCONNECT. `publish_will` is set for every reason
    /// but 0x00 (0x04 and the error codes) [MQTT-3.1.2-10] [MQTT-3.14.4-3];
    /// `session_expiry` when the client changed it.
    Disconnected {
        publish_will: bool,
        session_expiry: Option<u32>,
    },
    /// Close the connection. With a reason, a 5.0 client first gets a
    /// DISCONNECT carrying it [MQTT-4.13.2-1]. The will is published unless
    /// the client disconnected normally.
    Close {
        reason: Option<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Waiting for CONNECT.
    Idle,
    /// CONNECT accepted, waiting for the session to open.
    Connecting,
    Connected,
    Closed,
}

/// The inbound MQTT state of one connection.
#[derive(Debug)]
pub struct Channel {
    config: ChannelConfig,
    state: ChannelState,
    version: Option<ProtocolVersion>,
    client_id: Option<ClientId>,
    /// Id to give a client that sent an empty one. [MQTT-3.1.3-6]
    assign_id: ClientId,
    keep_alive: u16,
    last_received: Instant,
    session_expiry: u32,
    /// What the client asked for, before our cap.
    requested_expiry: u32,
    inbound_aliases: HashMap<u16, ByteString>,
    /// Inbound QoS 2 packet ids: PUBREC sent, PUBREL not yet received.
    awaiting_rel: HashSet<u16>,
    /// The client asked for authentication methods we do not support.
    auth_method: bool,
}

impl Channel {
    /// `assign_id` is used only when the client sends an empty client id.
    pub fn new(config: ChannelConfig, assign_id: ClientId, now: Instant) -> Channel {
        Channel {
            config,
            state: ChannelState::Idle,
            version: None,
            client_id: None,
            assign_id,
            keep_alive: 0,
            last_received: now,
            session_expiry: 0,
            requested_expiry: 0,
            inbound_aliases: HashMap::new(),
            awaiting_rel: HashSet::new(),
            auth_method: false,
        }
    }

    pub fn state(&self) -> ChannelState {
        self.state
    }

    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    pub fn client_id(&self) -> Option<&ClientId> {
        self.client_id.as_ref()
    }

    pub fn session_expiry(&self) -> u32 {
        self.session_expiry
    }

    /// Inbound QoS 2 ids awaiting PUBREL: part of the session state, handed
    /// to the session when the connection ends. [MQTT-4.1.0-2]
    pub fn awaiting_rel(&self) -> &HashSet<u16> {
        &self.awaiting_rel
    }

    /// Handle one packet from the client.
    pub fn handle_in(&mut self, packet: Packet, now: Instant, out: &mut Vec<Effect>) {
        self.last_received = now;
        match (self.state, packet) {
            (ChannelState::Idle, Packet::Connect(c)) => self.handle_connect(*c, out),
            (ChannelState::Idle, _) => self.close(None, out),
            (ChannelState::Closed, _) => {}
            // [MQTT-3.1.0-2] a second CONNECT is a protocol error.
            (_, Packet::Connect(_)) => self.close(Some(reason::PROTOCOL_ERROR), out),
            (ChannelState::Connecting, _) => self.close(Some(reason::PROTOCOL_ERROR), out),
            (ChannelState::Connected, p) => self.handle_connected(p, now, out),
        }
    }

    fn handle_connected(&mut self, packet: Packet, now: Instant, out: &mut Vec<Effect>) {
        match packet {
            Packet::Publish(p) => self.handle_publish(p, now, out),
            Packet::PubRel(a) => {
                // [MQTT-4.3.3-11] answer PUBCOMP even for an unknown id.
                let code = if self.awaiting_rel.remove(&a.packet_id) {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                out.push(Effect::Send(Packet::PubComp(self.ack(a.packet_id, code))));
            }
            Packet::PubAck(a) => out.push(Effect::PubAck(a.packet_id)),
            Packet::PubRec(a) => out.push(Effect::PubRec {
                packet_id: a.packet_id,
                reason: a.reason,
            }),
            Packet::PubComp(a) => out.push(Effect::PubComp(a.packet_id)),
            Packet::Subscribe(s) => self.handle_subscribe(s, out),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u, out),
            Packet::PingReq => out.push(Effect::Send(Packet::PingResp)),
            Packet::Disconnect(d) => self.handle_disconnect(d, out),
            Packet::Auth(_) => {
                // No enhanced authentication is configured, so the client
                // cannot be in an AUTH exchange. [MQTT-4.12.0-1]
                let code = if self.auth_method {
                    reason::BAD_AUTHENTICATION_METHOD
                } else {
                    reason::PROTOCOL_ERROR
                };
                self.close(Some(code), out)
            }
            // Server-to-client packets from a client are protocol errors.
            Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Connect(_) => self.close(Some(reason::PROTOCOL_ERROR), out),
        }
    }

    fn ack(&self, packet_id: u16, code: u8) -> Ack {
        // 3.1.1 acks carry no reason code.
        let code = if self.version == Some(ProtocolVersion::V5) {
            code
        } else {
            0
        };
        Ack::with_reason(packet_id, code)
    }

    /// Close with a reason: a 5.0 client gets DISCONNECT first.
    pub fn close(&mut self, code: Option<u8>, out: &mut Vec<Effect>) {
        if self.state == ChannelState::Closed {
            return;
        }
        self.state = ChannelState::Closed;
        out.push(Effect::Close { reason: code });
    }

    /// Keep alive check: call periodically. [MQTT-3.1.2-24]
    pub fn check_keep_alive(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.keep_alive == 0 || self.state != ChannelState::Connected {
            return;
        }
        let limit =
            Duration::from_secs_f64(f64::from(self.keep_alive) * self.config.keep_alive_multiplier);
        if now.saturating_duration_since(self.last_received) > limit {
            self.close(Some(reason::KEEP_ALIVE_TIMEOUT), out);
        }
    }

    /// The session's inbound QoS 2 state, restored on resume.
    pub fn restore_awaiting_rel(&mut self, ids: HashSet<u16>) {
        self.awaiting_rel = ids;
    }

    /// The effective keep alive (seconds), known after CONNECT.
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }
}

mod connect;
mod inbound;

pub use inbound::{suback, unsuback};

#[cfg(test)]
mod tests;
