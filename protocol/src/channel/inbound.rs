//! Packets from a connected client: PUBLISH, SUBSCRIBE, UNSUBSCRIBE,
//! DISCONNECT.

use super::*;

impl Channel {
    fn is_v5(&self) -> bool {
        self.version == Some(ProtocolVersion::V5)
    }

    pub(super) fn handle_publish(&mut self, mut p: Publish, now: Instant, out: &mut Vec<Effect>) {
        if let Err(code) = self.check_publish(&mut p) {
            self.close(Some(code), out);
            return;
        }
        let publisher = self
            .client_id
            .clone()
            .unwrap_or_else(|| self.assign_id.clone());
        match p.qos {
            QoS::AtMostOnce => out.push(Effect::Publish(Message::from_publish(p, publisher, now))),
            QoS::AtLeastOnce => {
                let ack = self.ack(p.packet_id, reason::SUCCESS);
                out.push(Effect::Publish(Message::from_publish(p, publisher, now)));
                out.push(Effect::Send(Packet::PubAck(ack)));
            }
            QoS::ExactlyOnce => {
                let packet_id = p.packet_id;
                if self.awaiting_rel.contains(&packet_id) {
                    // A resend of a message we already have: acknowledge
                    // again, do not deliver twice. [MQTT-4.3.3-10]
                    out.push(Effect::Send(Packet::PubRec(
                        self.ack(packet_id, reason::SUCCESS),
                    )));
                    return;
                }
                if self.awaiting_rel.len() >= usize::from(self.config.receive_maximum) {
                    // [MQTT-3.3.4-8] more unacknowledged QoS 2 than allowed.
                    self.close(Some(reason::RECEIVE_MAXIMUM_EXCEEDED), out);
                    return;
                }
                self.awaiting_rel.insert(packet_id);
                out.push(Effect::Publish(Message::from_publish(p, publisher, now)));
                out.push(Effect::Send(Packet::PubRec(
                    self.ack(packet_id, reason::SUCCESS),
                )));
            }
        }
    }

    /// Validate a PUBLISH and resolve its topic alias. Err = DISCONNECT code.
    fn check_publish(&mut self, p: &mut Publish) -> Result<(), u8> {
        if p.qos > self.config.max_qos {
            return Err(reason::QOS_NOT_SUPPORTED); // [MQTT-3.2.2-11]
        }
        if p.retain && !self.config.retain_available {
            return Err(reason::RETAIN_NOT_SUPPORTED); // [MQTT-3.2.2-14]
        }
        self.resolve_alias(p)?;
        if p.topic.is_empty() {
            // 5.0 §3.3.2.1: an empty Topic Name without a Topic Alias.
            return Err(reason::PROTOCOL_ERROR);
        }
        if self.check_topic_name(&p.topic).is_err() {
            return Err(reason::TOPIC_NAME_INVALID); // [MQTT-3.3.2-2]
        }
        if p.properties.subscription_identifiers.iter().any(|_| true) {
            // [MQTT-3.3.4-6] a client must not send subscription ids.
            return Err(reason::PROTOCOL_ERROR);
        }
        Ok(())
    }

    /// Inbound topic aliases. [MQTT-3.3.2-7..12]
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), u8> {
        let Some(alias) = p.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > self.config.max_topic_alias {
            return Err(reason::TOPIC_ALIAS_INVALID);
        }
        if p.topic.is_empty() {
            match self.inbound_aliases.get(&alias) {
                Some(t) => p.topic = t.clone(),
                None => return Err(reason::PROTOCOL_ERROR),
            }
        } else {
            self.inbound_aliases.insert(alias, p.topic.clone());
        }
        Ok(())
    }

    pub(super) fn handle_subscribe(&mut self, s: Subscribe, out: &mut Vec<Effect>) {
        let identifier = s.properties.subscription_identifier;
        let mut requests = Vec::with_capacity(s.filters.len());
        for f in s.filters {
            let refused = self.check_filter(&f, identifier);
            if refused == Some(reason::PROTOCOL_ERROR) {
                // [MQTT-3.8.3-4] No Local on a shared subscription.
                self.close(Some(reason::PROTOCOL_ERROR), out);
                return;
            }
            let mut options = f.options;
            options.qos = options.qos.min(self.config.max_qos);
            requests.push(SubscribeRequest {
                filter: f.filter,
                subscription: Subscription {
                    options,
                    identifier,
                },
                refused,
            });
        }
        out.push(Effect::Subscribe {
            packet_id: s.packet_id,
            requests,
        });
    }

    /// The SUBACK failure code for one filter, if it is refused.
    fn check_filter(&self, f: &SubscribeFilter, identifier: Option<u32>) -> Option<u8> {
        let shared = match topic::parse_shared(&f.filter) {
            Ok(s) => s,
            Err(_) => return Some(reason::TOPIC_FILTER_INVALID),
        };
        let filter = shared.map_or(&*f.filter, |(_, filter)| filter);
        if topic::validate_topic_filter(filter).is_err()
            || filter.split('/').count() > self.config.max_topic_levels
        {
            return Some(reason::TOPIC_FILTER_INVALID);
        }
        if shared.is_some() && f.options.no_local && self.is_v5() {
            return Some(reason::PROTOCOL_ERROR);
        }
        if shared.is_some() && !self.config.shared_subscriptions {
            return Some(reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
        }
        if topic::has_wildcards(filter) && !self.config.wildcard_subscriptions {
            return Some(reason::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
        }
        if identifier.is_some() && !self.config.subscription_identifiers {
            return Some(reason::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED);
        }
        None
    }

    pub(super) fn handle_unsubscribe(&mut self, u: Unsubscribe, out: &mut Vec<Effect>) {
        out.push(Effect::Unsubscribe {
            packet_id: u.packet_id,
            filters: u.filters,
        });
    }

    pub(super) fn handle_disconnect(&mut self, d: Disconnect, out: &mut Vec<Effect>) {
        let mut session_expiry = None;
        if let Some(e) = d.properties.session_expiry_interval {
            // 5.0 §3.14.2.2.2: non-zero after zero *in CONNECT* (not after
            // our cap) is a protocol error.
            if self.requested_expiry == 0 && e != 0 {
                self.close(Some(reason::PROTOCOL_ERROR), out);
                return;
            }
            self.session_expiry = e.min(self.config.max_session_expiry);
            session_expiry = Some(self.session_expiry);
        }
        // [MQTT-3.14.4-3] only 0x00 discards the will; 0x04 and every error
        // reason keep it. [MQTT-3.1.2-10]
        let publish_will = d.reason != reason::NORMAL_DISCONNECTION;
        out.push(Effect::Disconnected {
            publish_will,
            session_expiry,
        });
        self.state = ChannelState::Closed;
        out.push(Effect::Close { reason: None });
    }
}

/// The session answered a SUBSCRIBE; the per-filter codes go to SUBACK.
/// 3.1.1 knows only 0x80 as a failure. [MQTT-3.9.3]
pub fn suback(version: ProtocolVersion, packet_id: u16, mut codes: Vec<u8>) -> Packet {
    if version != ProtocolVersion::V5 {
        for c in &mut codes {
            if *c >= 0x80 {
                *c = reason::UNSPECIFIED_ERROR;
            }
        }
    }
    Packet::SubAck(SubAck {
        packet_id,
        reason_codes: codes,
        properties: AckProperties::default(),
    })
}

/// UNSUBACK; 3.1.1 carries no codes. [MQTT-3.11.3]
pub fn unsuback(version: ProtocolVersion, packet_id: u16, codes: Vec<u8>) -> Packet {
    let reason_codes = if version == ProtocolVersion::V5 {
        codes
    } else {
        Vec::new()
    };
    Packet::UnsubAck(UnsubAck {
        packet_id,
        reason_codes,
        properties: AckProperties::default(),
    })
}
