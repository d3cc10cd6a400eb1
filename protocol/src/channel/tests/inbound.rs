//! Packets from a connected client: PUBLISH and its acknowledgements, topic
//! aliases, PINGREQ, AUTH, and packets a client must not send.

use super::*;

#[test]
fn qos0_publish_is_routed_without_acknowledgement() {
    // [MQTT-3.3.4-1] QoS 0: no response.
    let (mut ch, now) = connected(V5);
    let mut p = publish("a/b", QoS::AtMostOnce, 0);
    p.retain = true;
    p.properties.message_expiry_interval = Some(30);
    let want = Message {
        id: crate::MessageId::NONE,
        topic: "a/b".into(),
        payload: Bytes::from_static(b"payload"),
        qos: QoS::AtMostOnce,
        retain: true,
        publisher: ClientId::new("c1"),
        properties: PublishProperties {
            message_expiry_interval: Some(30),
            ..PublishProperties::default()
        },
        expires_at: Some(now + Duration::from_secs(30)),
    };
    assert_eq!(
        feed(&mut ch, Packet::Publish(p), now),
        vec![Effect::Publish(want)]
    );
}

#[test]
fn qos1_publish_is_routed_then_acknowledged() {
    // [MQTT-3.3.4-1] [MQTT-4.3.2-4] PUBACK with the same packet id.
    for version in [V311, V5] {
        let (mut ch, now) = connected(version);
        let p = publish("a/b", QoS::AtLeastOnce, 12);
        let want = vec![
            Effect::Publish(routed(&p, now)),
            Effect::Send(Packet::PubAck(Ack::new(12))),
        ];
        assert_eq!(feed(&mut ch, Packet::Publish(p), now), want);
        assert!(ch.awaiting_rel().is_empty());
    }
}

#[test]
fn qos2_publish_is_routed_once_and_completed_by_pubrel() {
    let (mut ch, now) = connected(V5);
    let p = publish("a/b", QoS::ExactlyOnce, 3);
    // [MQTT-4.3.3-8] PUBREC, ownership accepted: route now.
    let want = vec![
        Effect::Publish(routed(&p, now)),
        Effect::Send(Packet::PubRec(Ack::new(3))),
    ];
    assert_eq!(feed(&mut ch, Packet::Publish(p.clone()), now), want);
    assert_eq!(ch.awaiting_rel(), &HashSet::from([3]));

    // [MQTT-4.3.3-10] a resend before PUBREL is acknowledged again but not
    // delivered a second time.
    let dup = Publish {
        dup: true,
        ..p.clone()
    };
    assert_eq!(
        feed(&mut ch, Packet::Publish(dup), now),
        vec![Effect::Send(Packet::PubRec(Ack::new(3)))]
    );

    // [MQTT-4.3.3-11] PUBREL -> PUBCOMP with the same id.
    assert_eq!(
        feed(&mut ch, Packet::PubRel(Ack::new(3)), now),
        vec![Effect::Send(Packet::PubComp(Ack::new(3)))]
    );
    assert!(ch.awaiting_rel().is_empty());

    // [MQTT-4.3.3-12] after PUBCOMP the same id is a new message.
    let want = vec![
        Effect::Publish(routed(&p, now)),
        Effect::Send(Packet::PubRec(Ack::new(3))),
    ];
    assert_eq!(feed(&mut ch, Packet::Publish(p), now), want);
}

#[test]
fn qos2_ids_restored_from_the_session_are_not_delivered_again() {
    // [MQTT-4.1.0-2] the inbound QoS 2 state survives a reconnect.
    let (mut ch, now) = connected(V5);
    ch.restore_awaiting_rel(HashSet::from([9]));
    let p = Publish {
        dup: true,
        ..publish("a", QoS::ExactlyOnce, 9)
    };
    assert_eq!(
        feed(&mut ch, Packet::Publish(p), now),
        vec![Effect::Send(Packet::PubRec(Ack::new(9)))]
    );
    assert_eq!(
        feed(&mut ch, Packet::PubRel(Ack::new(9)), now),
        vec![Effect::Send(Packet::PubComp(Ack::new(9)))]
    );
}

#[test]
fn pubrel_for_an_unknown_id_is_answered_with_pubcomp() {
    // [MQTT-4.3.3-11] always PUBCOMP; 5.0 says 0x92 Packet Identifier not
    // found (§3.7.2.1), 3.1.1 has no reason code.
    let (mut ch, now) = connected(V5);
    let want = vec![Effect::Send(Packet::PubComp(Ack::with_reason(
        4,
        reason::PACKET_IDENTIFIER_NOT_FOUND,
    )))];
    assert_eq!(feed(&mut ch, Packet::PubRel(Ack::new(4)), now), want);

    let (mut ch, now) = connected(V311);
    assert_eq!(
        feed(&mut ch, Packet::PubRel(Ack::new(4)), now),
        vec![Effect::Send(Packet::PubComp(Ack::new(4)))]
    );
}

#[test]
fn more_unreleased_qos2_than_receive_maximum_closes_with_0x93() {
    // [MQTT-3.3.4-7] §3.3.4: more than Receive Maximum unacknowledged QoS 2
    // publishes -> DISCONNECT 0x93.
    let (mut ch, now) = connected_with(
        V5,
        ChannelConfig {
            receive_maximum: 2,
            ..ChannelConfig::default()
        },
    );
    for id in [1, 2] {
        assert_eq!(
            feed(
                &mut ch,
                Packet::Publish(publish("a", QoS::ExactlyOnce, id)),
                now
            )
            .len(),
            2
        );
    }
    // A resend of a held id is not a new message: still fine.
    assert_eq!(
        feed(
            &mut ch,
            Packet::Publish(publish("a", QoS::ExactlyOnce, 2)),
            now
        ),
        vec![Effect::Send(Packet::PubRec(Ack::new(2)))]
    );
    // QoS 1 is acknowledged at once and never fills the window.
    assert_eq!(
        feed(
            &mut ch,
            Packet::Publish(publish("a", QoS::AtLeastOnce, 5)),
            now
        )
        .len(),
        2
    );
    // Releasing one makes room for one.
    feed(&mut ch, Packet::PubRel(Ack::new(1)), now);
    assert_eq!(
        feed(
            &mut ch,
            Packet::Publish(publish("a", QoS::ExactlyOnce, 3)),
            now
        )
        .len(),
        2
    );
    // The third unreleased one is refused and not routed.
    let effects = feed(
        &mut ch,
        Packet::Publish(publish("a", QoS::ExactlyOnce, 4)),
        now,
    );
    assert_eq!(effects, close(Some(reason::RECEIVE_MAXIMUM_EXCEEDED)));
    assert_eq!(ch.state(), ChannelState::Closed);
}

#[test]
fn publish_above_maximum_qos_or_retained_when_unavailable_closes() {
    // [MQTT-3.2.2-11] 0x9B, [MQTT-3.2.2-14] 0x9A.
    let config = ChannelConfig {
        max_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..ChannelConfig::default()
    };
    let (mut ch, now) = connected_with(V5, config.clone());
    let effects = feed(
        &mut ch,
        Packet::Publish(publish("a", QoS::ExactlyOnce, 1)),
        now,
    );
    assert_eq!(effects, close(Some(reason::QOS_NOT_SUPPORTED)));

    let (mut ch, now) = connected_with(V5, config);
    let p = Publish {
        retain: true,
        ..publish("a", QoS::AtMostOnce, 0)
    };
    assert_eq!(
        feed(&mut ch, Packet::Publish(p), now),
        close(Some(reason::RETAIN_NOT_SUPPORTED))
    );
}

#[test]
fn publish_to_an_invalid_topic_name_closes_with_0x90() {
    // [MQTT-3.3.2-2] no wildcards in a topic name; the broker's level limit.
    for topic in ["a/+", "#", "a/#", "a\0b"] {
        let (mut ch, now) = connected(V5);
        let effects = feed(
            &mut ch,
            Packet::Publish(publish(topic, QoS::AtLeastOnce, 1)),
            now,
        );
        assert_eq!(
            effects,
            close(Some(reason::TOPIC_NAME_INVALID)),
            "{topic:?}"
        );
    }
    let (mut ch, now) = connected_with(
        V5,
        ChannelConfig {
            max_topic_levels: 3,
            ..ChannelConfig::default()
        },
    );
    assert_eq!(
        feed(
            &mut ch,
            Packet::Publish(publish("a/b/c", QoS::AtMostOnce, 0)),
            now
        )
        .len(),
        1
    );
    let effects = feed(
        &mut ch,
        Packet::Publish(publish("a/b/c/d", QoS::AtMostOnce, 0)),
        now,
    );
    assert_eq!(effects, close(Some(reason::TOPIC_NAME_INVALID)));
}

#[test]
fn publish_with_empty_topic_and_no_alias_is_a_protocol_error() {
    // MQTT 5.0 §3.3.2.1: a zero length Topic Name without a Topic Alias is a
    // Protocol Error.
    let (mut ch, now) = connected(V5);
    let effects = feed(
        &mut ch,
        Packet::Publish(publish("", QoS::AtMostOnce, 0)),
        now,
    );
    assert_eq!(effects, close(Some(reason::PROTOCOL_ERROR)));
}

#[test]
fn subscription_identifier_from_a_client_is_a_protocol_error() {
    // [MQTT-3.3.4-6]
    let (mut ch, now) = connected(V5);
    let mut p = publish("a", QoS::AtMostOnce, 0);
    p.properties.subscription_identifiers = vec![1];
    assert_eq!(
        feed(&mut ch, Packet::Publish(p), now),
        close(Some(reason::PROTOCOL_ERROR))
    );
}

#[test]
fn topic_alias_is_set_then_used_then_replaced() {
    // MQTT 5.0 §3.3.2.3.4: a topic and an alias set the mapping; an empty
    // topic with the alias uses it; a new topic replaces it.
    let (mut ch, now) = connected(V5);
    let plain = |topic: &str| routed(&publish(topic, QoS::AtMostOnce, 0), now);

    // The routed message never carries the inbound alias.
    let effects = feed(
        &mut ch,
        Packet::Publish(with_alias(publish("a/b", QoS::AtMostOnce, 0), 1)),
        now,
    );
    assert_eq!(effects, vec![Effect::Publish(plain("a/b"))]);
    let effects = feed(
        &mut ch,
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0), 1)),
        now,
    );
    assert_eq!(effects, vec![Effect::Publish(plain("a/b"))]);

    feed(
        &mut ch,
        Packet::Publish(with_alias(publish("c", QoS::AtMostOnce, 0), 1)),
        now,
    );
    let effects = feed(
        &mut ch,
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0), 1)),
        now,
    );
    assert_eq!(effects, vec![Effect::Publish(plain("c"))]);

    // [MQTT-3.3.2-12] any alias up to our maximum is accepted.
    let effects = feed(
        &mut ch,
        Packet::Publish(with_alias(publish("z", QoS::AtMostOnce, 0), 65535)),
        now,
    );
    assert_eq!(effects, vec![Effect::Publish(plain("z"))]);
}

#[test]
fn unknown_topic_alias_is_a_protocol_error() {
    // MQTT 5.0 §3.3.2.3.4: an alias with no mapping is a Protocol Error.
    let (mut ch, now) = connected(V5);
    let effects = feed(
        &mut ch,
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0), 2)),
        now,
    );
    assert_eq!(effects, close(Some(reason::PROTOCOL_ERROR)));
}

#[test]
fn topic_alias_zero_or_above_maximum_closes_with_0x94() {
    // [MQTT-3.3.2-8] alias 0, [MQTT-3.3.2-9] alias above our Topic Alias
    // Maximum: DISCONNECT 0x94 Topic Alias invalid.
    let cases = [(10, 0), (10, 11), (0, 1)];
    for (max_topic_alias, alias) in cases {
        let (mut ch, now) = connected_with(
            V5,
            ChannelConfig {
                max_topic_alias,
                ..ChannelConfig::default()
            },
        );
        let effects = feed(
            &mut ch,
            Packet::Publish(with_alias(publish("a", QoS::AtMostOnce, 0), alias)),
            now,
        );
        assert_eq!(
            effects,
            close(Some(reason::TOPIC_ALIAS_INVALID)),
            "max {max_topic_alias}, alias {alias}"
        );
    }
}

#[test]
fn acknowledgements_from_the_client_go_to_the_session() {
    let (mut ch, now) = connected(V5);
    assert_eq!(
        feed(&mut ch, Packet::PubAck(Ack::new(1)), now),
        vec![Effect::PubAck(1)]
    );
    let effects = feed(
        &mut ch,
        Packet::PubRec(Ack::with_reason(2, reason::QUOTA_EXCEEDED)),
        now,
    );
    assert_eq!(
        effects,
        vec![Effect::PubRec {
            packet_id: 2,
            reason: reason::QUOTA_EXCEEDED
        }]
    );
    assert_eq!(
        feed(&mut ch, Packet::PubComp(Ack::new(3)), now),
        vec![Effect::PubComp(3)]
    );
}

#[test]
fn pingreq_is_answered_with_pingresp() {
    // [MQTT-3.12.4-1]
    let (mut ch, now) = connected(V311);
    assert_eq!(
        feed(&mut ch, Packet::PingReq, now),
        vec![Effect::Send(Packet::PingResp)]
    );
}

#[test]
fn server_to_client_packets_from_a_client_are_a_protocol_error() {
    let packets = [
        Packet::ConnAck(ConnAck::default()),
        Packet::SubAck(SubAck::default()),
        Packet::UnsubAck(UnsubAck::default()),
        Packet::PingResp,
    ];
    for p in packets {
        let (mut ch, now) = connected(V5);
        assert_eq!(
            feed(&mut ch, p.clone(), now),
            close(Some(reason::PROTOCOL_ERROR)),
            "{p:?}"
        );
    }
}

#[test]
fn auth_without_an_authentication_method_is_a_protocol_error() {
    // MQTT 5.0 §4.12: a client that gave no Authentication Method in CONNECT
    // must not send AUTH.
    let (mut ch, now) = connected(V5);
    let auth = Auth {
        reason: reason::REAUTHENTICATE,
        ..Auth::default()
    };
    assert_eq!(
        feed(&mut ch, Packet::Auth(auth), now),
        close(Some(reason::PROTOCOL_ERROR))
    );
}
