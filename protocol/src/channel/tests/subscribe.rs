//! SUBSCRIBE / UNSUBSCRIBE validation and the SUBACK / UNSUBACK mapping.

use super::*;

fn subscribe(filters: &[(&str, SubscriptionOptions)], identifier: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: filters
            .iter()
            .map(|(f, options)| SubscribeFilter {
                filter: ByteString::from(*f),
                options: *options,
            })
            .collect(),
        properties: SubscribeProperties {
            subscription_identifier: identifier,
            user_properties: Vec::new(),
        },
    })
}

fn qos(q: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: q,
        ..SubscriptionOptions::default()
    }
}

fn request(
    filter: &str,
    options: SubscriptionOptions,
    identifier: Option<u32>,
    refused: Option<u8>,
) -> SubscribeRequest {
    SubscribeRequest {
        filter: ByteString::from(filter),
        subscription: Subscription {
            options,
            identifier,
        },
        refused,
    }
}

#[test]
fn subscribe_passes_valid_filters_with_their_options() {
    let (mut ch, now) = connected(V5);
    let opts = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::Never,
    };
    let packet = subscribe(
        &[("a/+/c", opts), ("$share/g/x/#", qos(QoS::AtMostOnce))],
        Some(5),
    );
    let want = Effect::Subscribe {
        packet_id: 7,
        requests: vec![
            request("a/+/c", opts, Some(5), None),
            request("$share/g/x/#", qos(QoS::AtMostOnce), Some(5), None),
        ],
    };
    assert_eq!(feed(&mut ch, packet, now), vec![want]);
}

#[test]
fn invalid_filters_are_refused_with_0x8f_and_the_rest_kept() {
    // [MQTT-4.7.1-2] '#' last, [MQTT-4.7.1-3] '+' a whole level,
    // [MQTT-4.7.3-1] non-empty, [MQTT-4.8.2-1] share name; §3.9.3 0x8F.
    let (mut ch, now) = connected_with(
        V5,
        ChannelConfig {
            max_topic_levels: 3,
            ..ChannelConfig::default()
        },
    );
    let q1 = qos(QoS::AtLeastOnce);
    let filters = [
        ("a/#/b", q1),
        ("a+", q1),
        ("", q1),
        ("$share//a", q1),
        ("$share/g", q1),
        ("a/b/c/d", q1),
        ("ok", q1),
    ];
    let want = Effect::Subscribe {
        packet_id: 7,
        requests: vec![
            request("a/#/b", q1, None, Some(reason::TOPIC_FILTER_INVALID)),
            request("a+", q1, None, Some(reason::TOPIC_FILTER_INVALID)),
            request("", q1, None, Some(reason::TOPIC_FILTER_INVALID)),
            request("$share//a", q1, None, Some(reason::TOPIC_FILTER_INVALID)),
            request("$share/g", q1, None, Some(reason::TOPIC_FILTER_INVALID)),
            request("a/b/c/d", q1, None, Some(reason::TOPIC_FILTER_INVALID)),
            request("ok", q1, None, None),
        ],
    };
    assert_eq!(feed(&mut ch, subscribe(&filters, None), now), vec![want]);
    assert_eq!(ch.state(), ChannelState::Connected);
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let (mut ch, now) = connected(V5);
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::default()
    };
    let packet = subscribe(
        &[("a", qos(QoS::AtMostOnce)), ("$share/g/a", no_local)],
        None,
    );
    assert_eq!(
        feed(&mut ch, packet, now),
        close(Some(reason::PROTOCOL_ERROR))
    );
}

#[test]
fn disabled_features_refuse_the_filters_that_need_them() {
    // §3.9.3: 0x9E shared, 0xA2 wildcards, 0xA1 subscription identifiers
    // (announced unavailable in CONNACK, §3.2.2.3.11..13).
    let q0 = qos(QoS::AtMostOnce);
    let config = ChannelConfig {
        shared_subscriptions: false,
        wildcard_subscriptions: false,
        ..ChannelConfig::default()
    };
    let (mut ch, now) = connected_with(V5, config);
    let packet = subscribe(
        &[("$share/g/a", q0), ("a/+", q0), ("a/#", q0), ("a/b", q0)],
        None,
    );
    let want = Effect::Subscribe {
        packet_id: 7,
        requests: vec![
            request(
                "$share/g/a",
                q0,
                None,
                Some(reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED),
            ),
            request(
                "a/+",
                q0,
                None,
                Some(reason::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
            ),
            request(
                "a/#",
                q0,
                None,
                Some(reason::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
            ),
            request("a/b", q0, None, None),
        ],
    };
    assert_eq!(feed(&mut ch, packet, now), vec![want]);

    let (mut ch, now) = connected_with(
        V5,
        ChannelConfig {
            subscription_identifiers: false,
            ..ChannelConfig::default()
        },
    );
    let want = Effect::Subscribe {
        packet_id: 7,
        requests: vec![
            request(
                "a",
                q0,
                Some(1),
                Some(reason::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED),
            ),
            request(
                "b",
                q0,
                Some(1),
                Some(reason::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED),
            ),
        ],
    };
    assert_eq!(
        feed(&mut ch, subscribe(&[("a", q0), ("b", q0)], Some(1)), now),
        vec![want]
    );
    // Without an identifier the same filters are fine.
    let want = Effect::Subscribe {
        packet_id: 7,
        requests: vec![request("a", q0, None, None)],
    };
    assert_eq!(
        feed(&mut ch, subscribe(&[("a", q0)], None), now),
        vec![want]
    );
}

#[test]
fn subscription_qos_is_capped_to_maximum_qos() {
    // [MQTT-3.2.2-10] a QoS 2 request is accepted and granted at most our
    // Maximum QoS; the other options are kept.
    let (mut ch, now) = connected_with(
        V5,
        ChannelConfig {
            max_qos: QoS::AtLeastOnce,
            ..ChannelConfig::default()
        },
    );
    let asked = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        retain_as_published: true,
        ..SubscriptionOptions::default()
    };
    let granted = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..asked
    };
    let packet = subscribe(&[("a", asked), ("b", qos(QoS::AtMostOnce))], None);
    let want = Effect::Subscribe {
        packet_id: 7,
        requests: vec![
            request("a", granted, None, None),
            request("b", qos(QoS::AtMostOnce), None, None),
        ],
    };
    assert_eq!(feed(&mut ch, packet, now), vec![want]);
}

#[test]
fn unsubscribe_goes_to_the_session() {
    let (mut ch, now) = connected(V311);
    let u = Unsubscribe {
        packet_id: 8,
        filters: vec!["a/#".into(), "b".into()],
        user_properties: Vec::new(),
    };
    assert_eq!(
        feed(&mut ch, Packet::Unsubscribe(u), now),
        vec![Effect::Unsubscribe {
            packet_id: 8,
            filters: vec!["a/#".into(), "b".into()]
        }]
    );
}

#[test]
fn suback_maps_every_v5_failure_to_0x80_for_v311() {
    // [MQTT-3.9.3-2] (3.1.1) only 0x00, 0x01, 0x02 and 0x80 exist.
    let codes = vec![
        0,
        1,
        2,
        reason::TOPIC_FILTER_INVALID,
        reason::NOT_AUTHORIZED,
        reason::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        0x80,
    ];
    let want = SubAck {
        packet_id: 5,
        reason_codes: vec![0, 1, 2, 0x80, 0x80, 0x80, 0x80],
        properties: AckProperties::default(),
    };
    assert_eq!(suback(V311, 5, codes.clone()), Packet::SubAck(want));
    let want = SubAck {
        packet_id: 5,
        reason_codes: codes.clone(),
        properties: AckProperties::default(),
    };
    assert_eq!(suback(V5, 5, codes), Packet::SubAck(want));
}

#[test]
fn unsuback_has_codes_only_in_v5() {
    // MQTT 3.1.1 §3.11.3: UNSUBACK has no payload.
    let codes = vec![reason::SUCCESS, reason::NO_SUBSCRIPTION_EXISTED];
    let want = UnsubAck {
        packet_id: 6,
        reason_codes: Vec::new(),
        properties: AckProperties::default(),
    };
    assert_eq!(unsuback(V311, 6, codes.clone()), Packet::UnsubAck(want));
    let want = UnsubAck {
        packet_id: 6,
        reason_codes: codes.clone(),
        properties: AckProperties::default(),
    };
    assert_eq!(unsuback(V5, 6, codes), Packet::UnsubAck(want));
}
