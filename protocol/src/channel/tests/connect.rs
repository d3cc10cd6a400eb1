//! CONNECT validation, the CONNACK, and packets in the wrong state.

use super::*;

fn info(version: ProtocolVersion, client_id: &str) -> ConnectInfo {
    ConnectInfo {
        version,
        client_id: ClientId::new(client_id),
        assigned: false,
        clean_start: true,
        session_expiry: 0,
        will: None,
        username: None,
        keep_alive: 30,
        receive_maximum: u16::MAX,
        maximum_packet_size: u32::MAX,
        topic_alias_maximum: 0,
    }
}

#[test]
fn v311_clean_session_is_accepted_with_zero_session_expiry() {
    // [MQTT-3.1.2-6] (3.1.1) clean session: the session ends with the connection.
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let mut c = connect_packet(V311, "c1", true, 30);
    c.username = Some("alice".into());
    c.will = Some(will("last/will", QoS::AtLeastOnce, true));
    let got = accept(&mut ch, c, now);
    let want = ConnectInfo {
        username: Some("alice".into()),
        will: Some(will("last/will", QoS::AtLeastOnce, true)),
        ..info(V311, "c1")
    };
    assert_eq!(got, want);
    assert_eq!(ch.state(), ChannelState::Connecting);
    assert_eq!(ch.version(), Some(V311));
    assert_eq!(ch.client_id(), Some(&ClientId::new("c1")));
    assert_eq!(ch.keep_alive(), 30);
}

#[test]
fn v311_persistent_session_lasts_until_the_broker_cap() {
    // [MQTT-3.1.2-4] (3.1.1) a persistent session has no expiry of its own.
    let config = ChannelConfig {
        max_session_expiry: 600,
        ..ChannelConfig::default()
    };
    let (mut ch, now) = new_channel(config);
    let got = accept(&mut ch, connect_packet(V311, "c1", false, 30), now);
    assert_eq!(
        got,
        ConnectInfo {
            clean_start: false,
            session_expiry: 600,
            ..info(V311, "c1")
        }
    );
    assert_eq!(ch.session_expiry(), 600);
    // 3.1.1 has no CONNACK properties to announce the cap in.
    assert_eq!(
        connack(&mut ch, true, &got),
        ConnAck {
            session_present: true,
            code: 0,
            properties: ConnAckProperties::default()
        }
    );
}

#[test]
fn v5_defaults_when_the_client_sends_no_properties() {
    // MQTT 5.0 §3.1.2.11: absent Session Expiry = 0, absent Receive Maximum =
    // 65535, absent Maximum Packet Size = no limit, absent Topic Alias
    // Maximum = 0 (no aliases towards the client).
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let got = accept(&mut ch, connect_packet(V5, "c1", false, 30), now);
    assert_eq!(
        got,
        ConnectInfo {
            clean_start: false,
            ..info(V5, "c1")
        }
    );
}

#[test]
fn v5_client_limits_are_passed_to_the_session() {
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let mut c = connect_packet(V5, "c1", true, 30);
    c.properties.session_expiry_interval = Some(300);
    c.properties.receive_maximum = Some(10);
    c.properties.maximum_packet_size = Some(4096);
    c.properties.topic_alias_maximum = Some(5);
    let got = accept(&mut ch, c, now);
    let want = ConnectInfo {
        session_expiry: 300,
        receive_maximum: 10,
        maximum_packet_size: 4096,
        topic_alias_maximum: 5,
        ..info(V5, "c1")
    };
    assert_eq!(got, want);
    // Not capped: no Session Expiry Interval in CONNACK (MQTT 5.0 §3.2.2.3.2).
    assert_eq!(
        connack(&mut ch, false, &got)
            .properties
            .session_expiry_interval,
        None
    );
}

#[test]
fn v5_session_expiry_is_capped_and_the_cap_announced_in_connack() {
    // MQTT 5.0 §3.2.2.3.2: the server tells the client the interval it uses.
    let config = ChannelConfig {
        max_session_expiry: 3600,
        ..ChannelConfig::default()
    };
    let (mut ch, now) = new_channel(config);
    let mut c = connect_packet(V5, "c1", false, 30);
    c.properties.session_expiry_interval = Some(u32::MAX);
    let got = accept(&mut ch, c, now);
    assert_eq!(got.session_expiry, 3600);
    assert_eq!(ch.session_expiry(), 3600);
    assert_eq!(
        connack(&mut ch, false, &got)
            .properties
            .session_expiry_interval,
        Some(3600)
    );
}

#[test]
fn server_keep_alive_overrides_the_v5_client_value() {
    // [MQTT-3.2.2-21] the client must use the Server Keep Alive.
    let config = ChannelConfig {
        server_keep_alive: Some(5),
        ..ChannelConfig::default()
    };
    let (mut ch, now) = new_channel(config);
    let got = accept(&mut ch, connect_packet(V5, "c1", true, 60), now);
    assert_eq!(got.keep_alive, 5);
    assert_eq!(ch.keep_alive(), 5);
    assert_eq!(
        connack(&mut ch, false, &got).properties.server_keep_alive,
        Some(5)
    );
}

#[test]
fn server_keep_alive_does_not_apply_to_v311_which_cannot_be_told() {
    // A 3.1.1 CONNACK has no properties: the client keeps its own value, and
    // the server must time it out by that value. [MQTT-3.1.2-24] (3.1.1)
    let config = ChannelConfig {
        server_keep_alive: Some(5),
        ..ChannelConfig::default()
    };
    let (mut ch, now) = new_channel(config.clone());
    assert_eq!(
        accept(&mut ch, connect_packet(V311, "c1", true, 60), now).keep_alive,
        60
    );
    let (mut ch, now) = new_channel(config);
    assert_eq!(
        accept(&mut ch, connect_packet(V311, "c1", true, 0), now).keep_alive,
        0
    );
}

#[test]
fn v5_empty_client_id_is_assigned_and_returned_in_connack() {
    // [MQTT-3.1.3-6] [MQTT-3.2.2-16] even without Clean Start in 5.0.
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let got = accept(&mut ch, connect_packet(V5, "", false, 30), now);
    assert_eq!(
        got,
        ConnectInfo {
            assigned: true,
            clean_start: false,
            ..info(V5, ASSIGNED)
        }
    );
    assert_eq!(ch.client_id(), Some(&ClientId::new(ASSIGNED)));
    let ack = connack(&mut ch, false, &got);
    assert_eq!(
        ack.properties.assigned_client_identifier,
        Some(ByteString::from(ASSIGNED))
    );
}

#[test]
fn v311_empty_client_id_with_clean_session_is_assigned() {
    // [MQTT-3.1.3-6] (3.1.1)
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let got = accept(&mut ch, connect_packet(V311, "", true, 30), now);
    assert_eq!(
        got,
        ConnectInfo {
            assigned: true,
            ..info(V311, ASSIGNED)
        }
    );
    // 3.1.1 cannot carry the assigned id: no properties at all.
    assert_eq!(
        connack(&mut ch, false, &got).properties,
        ConnAckProperties::default()
    );
}

#[test]
fn v311_empty_client_id_without_clean_session_is_refused() {
    // [MQTT-3.1.3-8] (3.1.1) CONNACK "identifier rejected" (0x85, return
    // code 2 on the wire), then close.
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let effects = feed(
        &mut ch,
        Packet::Connect(Box::new(connect_packet(V311, "", false, 30))),
        now,
    );
    assert_eq!(effects, refused(reason::CLIENT_IDENTIFIER_NOT_VALID));
    assert_eq!(ch.state(), ChannelState::Closed);
    assert_eq!(ch.client_id(), None);
}

#[test]
fn client_id_longer_than_the_limit_is_refused() {
    // [MQTT-3.1.3-5] the server may refuse ids it does not allow.
    for version in [V311, V5] {
        let config = ChannelConfig {
            max_client_id_len: 8,
            ..ChannelConfig::default()
        };
        let (mut ch, now) = new_channel(config.clone());
        let effects = feed(
            &mut ch,
            Packet::Connect(Box::new(connect_packet(version, "123456789", true, 30))),
            now,
        );
        assert_eq!(effects, refused(reason::CLIENT_IDENTIFIER_NOT_VALID));

        let (mut ch, now) = new_channel(config);
        assert_eq!(
            accept(&mut ch, connect_packet(version, "12345678", true, 30), now).client_id,
            ClientId::new("12345678")
        );
    }
}

#[test]
fn zero_receive_maximum_or_packet_size_is_a_protocol_error() {
    // MQTT 5.0 §3.1.2.11.3, §3.1.2.11.4: a value of 0 is a Protocol Error.
    let mut c = connect_packet(V5, "c1", true, 30);
    c.properties.receive_maximum = Some(0);
    let (mut ch, now) = new_channel(ChannelConfig::default());
    assert_eq!(
        feed(&mut ch, Packet::Connect(Box::new(c)), now),
        refused(reason::PROTOCOL_ERROR)
    );

    let mut c = connect_packet(V5, "c1", true, 30);
    c.properties.maximum_packet_size = Some(0);
    let (mut ch, now) = new_channel(ChannelConfig::default());
    assert_eq!(
        feed(&mut ch, Packet::Connect(Box::new(c)), now),
        refused(reason::PROTOCOL_ERROR)
    );
}

#[test]
fn authentication_method_is_refused_as_bad_method() {
    // [MQTT-4.12.0-1] no enhanced authentication is supported: 0x8C.
    let mut c = connect_packet(V5, "c1", true, 30);
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (mut ch, now) = new_channel(ChannelConfig::default());
    assert_eq!(
        feed(&mut ch, Packet::Connect(Box::new(c)), now),
        refused(reason::BAD_AUTHENTICATION_METHOD)
    );
    // The connection is closed: a following AUTH does nothing more.
    assert_eq!(feed(&mut ch, Packet::Auth(Auth::default()), now), vec![]);
}

#[test]
fn will_with_an_invalid_topic_is_refused() {
    // [MQTT-4.7.0-1] the Will Topic is a topic name: no wildcards, not empty
    // [MQTT-4.7.3-1].
    for topic in ["a/+", "a/#", ""] {
        let mut c = connect_packet(V5, "c1", true, 30);
        c.will = Some(will(topic, QoS::AtMostOnce, false));
        let (mut ch, now) = new_channel(ChannelConfig::default());
        assert_eq!(
            feed(&mut ch, Packet::Connect(Box::new(c)), now),
            refused(reason::TOPIC_NAME_INVALID),
            "{topic:?}"
        );
    }
    // More levels than the broker allows.
    let mut c = connect_packet(V311, "c1", true, 30);
    c.will = Some(will("a/b/c", QoS::AtMostOnce, false));
    let (mut ch, now) = new_channel(ChannelConfig {
        max_topic_levels: 2,
        ..ChannelConfig::default()
    });
    assert_eq!(
        feed(&mut ch, Packet::Connect(Box::new(c)), now),
        refused(reason::TOPIC_NAME_INVALID)
    );
}

#[test]
fn will_qos_above_maximum_qos_is_refused() {
    // [MQTT-3.2.2-12] 0x9B QoS not supported.
    let config = ChannelConfig {
        max_qos: QoS::AtLeastOnce,
        ..ChannelConfig::default()
    };
    let mut c = connect_packet(V5, "c1", true, 30);
    c.will = Some(will("w", QoS::ExactlyOnce, false));
    let (mut ch, now) = new_channel(config.clone());
    assert_eq!(
        feed(&mut ch, Packet::Connect(Box::new(c)), now),
        refused(reason::QOS_NOT_SUPPORTED)
    );

    let mut c = connect_packet(V5, "c1", true, 30);
    c.will = Some(will("w", QoS::AtLeastOnce, false));
    let (mut ch, now) = new_channel(config);
    assert_eq!(
        accept(&mut ch, c, now).will,
        Some(will("w", QoS::AtLeastOnce, false))
    );
}

#[test]
fn retained_will_without_retain_available_is_refused() {
    // [MQTT-3.2.2-13] 0x9A Retain not supported.
    let config = ChannelConfig {
        retain_available: false,
        ..ChannelConfig::default()
    };
    let mut c = connect_packet(V5, "c1", true, 30);
    c.will = Some(will("w", QoS::AtMostOnce, true));
    let (mut ch, now) = new_channel(config.clone());
    assert_eq!(
        feed(&mut ch, Packet::Connect(Box::new(c)), now),
        refused(reason::RETAIN_NOT_SUPPORTED)
    );

    let mut c = connect_packet(V5, "c1", true, 30);
    c.will = Some(will("w", QoS::AtMostOnce, false));
    let (mut ch, now) = new_channel(config);
    assert!(accept(&mut ch, c, now).will.is_some());
}

#[test]
fn v5_connack_announces_the_broker_limits() {
    // MQTT 5.0 §3.2.2.3: only what differs from the spec's defaults is sent.
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let got = accept(&mut ch, connect_packet(V5, "c1", true, 30), now);
    let ack = connack(&mut ch, true, &got);
    let want = ConnAckProperties {
        receive_maximum: Some(32),
        maximum_packet_size: Some(1024 * 1024),
        topic_alias_maximum: Some(65535),
        ..ConnAckProperties::default()
    };
    assert_eq!(
        ack,
        ConnAck {
            session_present: true,
            code: reason::SUCCESS,
            properties: want
        }
    );
    assert_eq!(ch.state(), ChannelState::Connected);
}

#[test]
fn v5_connack_announces_disabled_features() {
    let config = ChannelConfig {
        receive_maximum: u16::MAX,
        max_packet_size: 2048,
        max_topic_alias: 0,
        max_qos: QoS::AtLeastOnce,
        retain_available: false,
        wildcard_subscriptions: false,
        shared_subscriptions: false,
        subscription_identifiers: false,
        ..ChannelConfig::default()
    };
    let (mut ch, now) = new_channel(config);
    let got = accept(&mut ch, connect_packet(V5, "c1", true, 30), now);
    let want = ConnAckProperties {
        // 65535 is the default: not sent (§3.2.2.3.3).
        receive_maximum: None,
        maximum_packet_size: Some(2048),
        // 0 is the default: not sent (§3.2.2.3.8).
        topic_alias_maximum: None,
        maximum_qos: Some(1),                        // [MQTT-3.2.2-9]
        retain_available: Some(0),                   // §3.2.2.3.5
        wildcard_subscription_available: Some(0),    // §3.2.2.3.11
        shared_subscription_available: Some(0),      // §3.2.2.3.13
        subscription_identifiers_available: Some(0), // §3.2.2.3.12
        ..ConnAckProperties::default()
    };
    assert_eq!(connack(&mut ch, false, &got).properties, want);
}

#[test]
fn v311_connack_has_no_properties() {
    let config = ChannelConfig {
        max_session_expiry: 10,
        server_keep_alive: Some(5),
        max_qos: QoS::AtMostOnce,
        ..ChannelConfig::default()
    };
    let (mut ch, now) = new_channel(config);
    let got = accept(&mut ch, connect_packet(V311, "", true, 30), now);
    assert_eq!(connack(&mut ch, false, &got), ConnAck::default());
}

#[test]
fn connack_is_sent_only_once_and_never_after_a_refusal() {
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let got = accept(&mut ch, connect_packet(V5, "c1", true, 30), now);
    connack(&mut ch, false, &got);
    let mut out = Vec::new();
    ch.connack(false, &got, &mut out);
    assert_eq!(out, vec![]);

    // The session could not be opened: refused, and a late connack is ignored.
    let (mut ch, now) = new_channel(ChannelConfig::default());
    let got = accept(&mut ch, connect_packet(V5, "c1", true, 30), now);
    let mut out = Vec::new();
    ch.reject(reason::SERVER_UNAVAILABLE, &mut out);
    assert_eq!(out, refused(reason::SERVER_UNAVAILABLE));
    out.clear();
    ch.connack(true, &got, &mut out);
    assert_eq!(out, vec![]);
    assert_eq!(ch.state(), ChannelState::Closed);
}

#[test]
fn any_packet_before_connect_closes_without_a_reason() {
    // [MQTT-3.1.0-1] the first packet must be CONNECT; there is no
    // protocol version yet to send a DISCONNECT in.
    let packets = [
        Packet::PingReq,
        Packet::Publish(publish("a", QoS::AtMostOnce, 0)),
        Packet::Subscribe(Subscribe::default()),
        Packet::Disconnect(Disconnect::default()),
        Packet::Auth(Auth::default()),
    ];
    for p in packets {
        let (mut ch, now) = new_channel(ChannelConfig::default());
        assert_eq!(feed(&mut ch, p.clone(), now), close(None), "{p:?}");
        assert_eq!(ch.state(), ChannelState::Closed);
        // Nothing is processed after the close.
        assert_eq!(
            feed(
                &mut ch,
                Packet::Connect(Box::new(connect_packet(V5, "c1", true, 30))),
                now
            ),
            vec![]
        );
    }
}

#[test]
fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2]
    let (mut ch, now) = connected(V5);
    let again = Packet::Connect(Box::new(connect_packet(V5, "c1", true, 30)));
    assert_eq!(
        feed(&mut ch, again.clone(), now),
        close(Some(reason::PROTOCOL_ERROR))
    );
    assert_eq!(ch.state(), ChannelState::Closed);
    assert_eq!(feed(&mut ch, again, now), vec![]);
}

#[test]
fn packets_while_the_session_opens_are_a_protocol_error() {
    let (mut ch, now) = new_channel(ChannelConfig::default());
    accept(&mut ch, connect_packet(V5, "c1", true, 30), now);
    let again = Packet::Connect(Box::new(connect_packet(V5, "c1", true, 30)));
    assert_eq!(
        feed(&mut ch, again, now),
        close(Some(reason::PROTOCOL_ERROR))
    );

    let (mut ch, now) = new_channel(ChannelConfig::default());
    accept(&mut ch, connect_packet(V5, "c1", true, 30), now);
    assert_eq!(
        feed(&mut ch, Packet::PingReq, now),
        close(Some(reason::PROTOCOL_ERROR))
    );
}

#[test]
fn close_is_emitted_once() {
    let (mut ch, _) = connected(V5);
    let mut out = Vec::new();
    ch.close(Some(reason::SESSION_TAKEN_OVER), &mut out);
    ch.close(Some(reason::UNSPECIFIED_ERROR), &mut out);
    assert_eq!(out, close(Some(reason::SESSION_TAKEN_OVER)));
}
