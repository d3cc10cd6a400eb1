//! CONNECT validation and the CONNACK. [MQTT-3.1], [MQTT-3.2]

use super::*;

/// A 3.1.1 persistent session never expires by the client's choice: it
/// lasts until the broker's cap.
const V311_PERSISTENT_EXPIRY: u32 = u32::MAX;

impl Channel {
    pub(super) fn handle_connect(&mut self, c: Connect, out: &mut Vec<Effect>) {
        self.version = Some(c.protocol);
        if let Err(code) = self.validate_connect(&c) {
            self.reject(code, out);
            return;
        }
        let (client_id, assigned) = if c.client_id.is_empty() {
            (self.assign_id.clone(), true)
        } else {
            (ClientId(detach_str(&c.client_id)), false)
        };
        let asked_expiry = match c.protocol {
            ProtocolVersion::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if c.clean_start => 0,
            ProtocolVersion::V311 => V311_PERSISTENT_EXPIRY,
        };
        self.requested_expiry = asked_expiry;
        self.session_expiry = asked_expiry.min(self.config.max_session_expiry);
        // Server Keep Alive exists only in a 5.0 CONNACK [MQTT-3.2.2-21]: a
        // 3.1.1 client is never told, so it is held to its own value.
        self.keep_alive = match (c.protocol, self.config.server_keep_alive) {
            (ProtocolVersion::V5, Some(k)) => k,
            _ => c.keep_alive,
        };
        self.client_id = Some(client_id.clone());
        self.state = ChannelState::Connecting;
        out.push(Effect::Connect(Box::new(ConnectInfo {
            version: c.protocol,
            client_id,
            assigned,
            clean_start: c.clean_start,
            session_expiry: self.session_expiry,
            will: c.will.map(detach_will),
            username: c.username.as_deref().map(detach_str),
            keep_alive: self.keep_alive,
            receive_maximum: c.properties.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: c.properties.maximum_packet_size.unwrap_or(u32::MAX),
            topic_alias_maximum: c.properties.topic_alias_maximum.unwrap_or(0),
        })));
    }

    /// The CONNACK reason code a CONNECT must be refused with, if any.
    fn validate_connect(&mut self, c: &Connect) -> Result<(), u8> {
        let v5 = c.protocol == ProtocolVersion::V5;
        if c.client_id.is_empty() && !c.clean_start && !v5 {
            // [MQTT-3.1.3-8] 3.1.1: empty id needs clean session.
            return Err(reason::CLIENT_IDENTIFIER_NOT_VALID);
        }
        if c.client_id.len() > self.config.max_client_id_len {
            return Err(reason::CLIENT_IDENTIFIER_NOT_VALID);
        }
        // [MQTT-3.1.2-...] 0 is a protocol error for both.
        if c.properties.receive_maximum == Some(0) || c.properties.maximum_packet_size == Some(0) {
            return Err(reason::PROTOCOL_ERROR);
        }
        if c.properties.authentication_method.is_some() {
            // No enhanced authentication is configured. [MQTT-4.12.0-1]
            self.auth_method = true;
            return Err(reason::BAD_AUTHENTICATION_METHOD);
        }
        if let Some(will) = &c.will {
            if self.check_topic_name(&will.topic).is_err() {
                return Err(reason::TOPIC_NAME_INVALID);
            }
            if will.qos > self.config.max_qos {
                return Err(reason::QOS_NOT_SUPPORTED); // [MQTT-3.2.2-12]
            }
            if will.retain && !self.config.retain_available {
                return Err(reason::RETAIN_NOT_SUPPORTED); // [MQTT-3.2.2-13]
            }
        }
        Ok(())
    }

    pub(super) fn check_topic_name(&self, name: &str) -> Result<(), topic::TopicError> {
        topic::validate_topic_name(name)?;
        if name.split('/').count() > self.config.max_topic_levels {
            return Err(topic::TopicError::TooLong);
        }
        Ok(())
    }

    /// Refuse the CONNECT: CONNACK with the reason code, then close.
    /// [MQTT-3.2.2-6] no session present on a refusal.
    pub fn reject(&mut self, code: u8, out: &mut Vec<Effect>) {
        out.push(Effect::Send(Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            ..ConnAck::default()
        })));
        self.state = ChannelState::Closed;
        out.push(Effect::Close { reason: None });
    }

    /// The session is open: accept the connection with CONNACK.
    pub fn connack(&mut self, session_present: bool, info: &ConnectInfo, out: &mut Vec<Effect>) {
        if self.state != ChannelState::Connecting {
            return;
        }
        self.state = ChannelState::Connected;
        let properties = if info.version == ProtocolVersion::V5 {
            self.connack_properties(info)
        } else {
            ConnAckProperties::default()
        };
        out.push(Effect::Send(Packet::ConnAck(ConnAck {
            session_present,
            code: reason::SUCCESS,
            properties,
        })));
    }

    fn connack_properties(&self, info: &ConnectInfo) -> ConnAckProperties {
        let cfg = &self.config;
        let flag = |on: bool| if on { None } else { Some(0) };
        ConnAckProperties {
            assigned_client_identifier: info.assigned.then(|| info.client_id.0.clone()),
            receive_maximum: (cfg.receive_maximum < u16::MAX).then_some(cfg.receive_maximum),
            maximum_packet_size: Some(cfg.max_packet_size),
            topic_alias_maximum: (cfg.max_topic_alias > 0).then_some(cfg.max_topic_alias),
            maximum_qos: (cfg.max_qos < QoS::ExactlyOnce).then_some(cfg.max_qos as u8),
            retain_available: flag(cfg.retain_available),
            wildcard_subscription_available: flag(cfg.wildcard_subscriptions),
            shared_subscription_available: flag(cfg.shared_subscriptions),
            subscription_identifiers_available: flag(cfg.subscription_identifiers),
            server_keep_alive: cfg.server_keep_alive,
            // Tell the client when we capped its expiry. [MQTT-3.2.2-...]
            session_expiry_interval: (self.session_expiry != self.requested_expiry)
                .then_some(self.session_expiry),
            ..ConnAckProperties::default()
        }
    }
}

/// The fields of CONNECT are views into the connection's read buffer (a
/// chunk of several KB). What outlives the packet (client id, will, user
/// name: kept for the whole session) is copied out, so an idle connection
/// does not pin a read chunk for its lifetime.
fn detach_str(s: &str) -> ByteString {
    ByteString::from(s.to_owned())
}

fn detach_will(w: LastWill) -> LastWill {
    let p = w.properties;
    LastWill {
        topic: detach_str(&w.topic),
        payload: bytes::Bytes::copy_from_slice(&w.payload),
        qos: w.qos,
        retain: w.retain,
        properties: WillProperties {
            content_type: p.content_type.as_deref().map(detach_str),
            response_topic: p.response_topic.as_deref().map(detach_str),
            correlation_data: p
                .correlation_data
                .as_deref()
                .map(bytes::Bytes::copy_from_slice),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (detach_str(k), detach_str(v)))
                .collect(),
            ..p
        },
    }
}
