//! Publish and subscribe over real TCP: the QoS flows, overlapping and
//! shared subscriptions, `$` topics, the 5.0 subscription options and
//! properties (No Local, Retain As Published, subscription identifiers,
//! topic aliases, Maximum Packet Size, Message Expiry), and the refusals:
//! invalid topic names and filters, unknown unsubscribes, the subscription
//! limit.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use common::{connect_packet, opts, persistent_v5, publish, Broker, Raw, QUIET, WAIT};
use roost::config::ByteSize;
use roost_protocol::packet::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

async fn client(b: &Broker, version: ProtocolVersion, id: &str) -> Raw {
    Raw::connect(b.addr, version, id, true).await.0
}

/// The exact flows of each QoS, publisher to broker and broker to
/// subscriber, for one protocol version.
async fn qos_flows(version: ProtocolVersion) {
    let b = Broker::start().await;
    let mut s = client(&b, version, "flow-sub").await;
    assert_eq!(
        s.subscribe(1, "flow/#", QoS::ExactlyOnce)
            .await
            .reason_codes,
        [2]
    );
    let mut p = client(&b, version, "flow-pub").await;

    // QoS 0: no acknowledgement either way.
    p.send_publish(publish("flow/0", &b"q0"[..], QoS::AtMostOnce, 0))
        .await;
    let m = s.expect_publish().await;
    assert_eq!(
        (m.qos, m.packet_id, &m.payload[..]),
        (QoS::AtMostOnce, 0, &b"q0"[..])
    );
    p.expect_nothing(QUIET).await;

    // QoS 1: PUBLISH, PUBACK. [MQTT-4.3.2]
    p.send_publish(publish("flow/1", &b"q1"[..], QoS::AtLeastOnce, 11))
        .await;
    assert_eq!(p.recv().await, Some(Packet::PubAck(Ack::new(11))));
    let m = s.expect_publish().await;
    assert_eq!(
        (m.qos, m.dup, &m.payload[..]),
        (QoS::AtLeastOnce, false, &b"q1"[..])
    );
    assert_ne!(m.packet_id, 0);
    s.puback(m.packet_id).await;

    // QoS 2: PUBLISH, PUBREC, PUBREL, PUBCOMP. [MQTT-4.3.3]
    p.send_publish(publish("flow/2", &b"q2"[..], QoS::ExactlyOnce, 12))
        .await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(12))));
    p.pubrel(12).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(12))));
    let m = s.expect_publish().await;
    assert_eq!((m.qos, &m.payload[..]), (QoS::ExactlyOnce, &b"q2"[..]));
    s.pubrec(m.packet_id).await;
    assert_eq!(s.recv().await, Some(Packet::PubRel(Ack::new(m.packet_id))));
    s.pubcomp(m.packet_id).await;

    // Delivery is at min(published QoS, granted QoS). [MQTT-3.8.4-8]
    let mut low = client(&b, version, "flow-low").await;
    low.subscribe(1, "flow/#", QoS::AtLeastOnce).await;
    p.send_publish(publish("flow/down", &b"d"[..], QoS::ExactlyOnce, 13))
        .await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(13))));
    p.pubrel(13).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(13))));
    assert_eq!(low.expect_publish().await.qos, QoS::AtLeastOnce);
    assert_eq!(s.expect_publish().await.qos, QoS::ExactlyOnce);
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn v5_qos_0_1_2_flows_in_both_directions() {
    qos_flows(V5).await;
}

#[tokio::test]
async fn v311_qos_0_1_2_flows_in_both_directions() {
    qos_flows(V311).await;
}

#[tokio::test]
async fn overlapping_subscriptions_give_one_copy_at_the_highest_qos_with_every_identifier() {
    let b = Broker::start().await;
    let mut s = client(&b, V5, "overlap").await;
    s.subscribe_opts(1, "ov/+", opts(QoS::AtMostOnce), Some(1))
        .await;
    s.subscribe_opts(2, "ov/#", opts(QoS::ExactlyOnce), Some(2))
        .await;
    let mut s4 = client(&b, V311, "overlap4").await;
    s4.subscribe(1, "ov/+", QoS::AtLeastOnce).await;
    s4.subscribe(2, "ov/#", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "overlap-pub").await;
    p.send_publish(publish("ov/x", &b"once"[..], QoS::ExactlyOnce, 1))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));

    // [MQTT-3.3.4-2] one copy, at the maximum QoS; [MQTT-3.3.4-4] with
    // both identifiers.
    let m = s.expect_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    let mut ids = m.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    s.expect_nothing(QUIET).await;
    let m = s4.expect_publish().await;
    assert_eq!(m.qos, QoS::AtLeastOnce);
    s4.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let b = Broker::start().await;
    let mut wild = client(&b, V5, "wild").await;
    wild.subscribe(1, "#", QoS::AtMostOnce).await;
    wild.subscribe(2, "+/x", QoS::AtMostOnce).await;
    let mut sys = client(&b, V5, "sys").await;
    sys.subscribe(1, "$SYS/#", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "dollar-pub").await;
    for topic in ["$SYS/x", "$foo", "$foo/x", "plain/x"] {
        p.publish(topic, b"m", QoS::AtMostOnce, false, 0).await;
    }
    // [MQTT-4.7.2-1]: the first message `#` and `+/x` see is the plain one.
    assert_eq!(&*wild.expect_publish().await.topic, "plain/x");
    wild.expect_nothing(QUIET).await;
    assert_eq!(&*sys.expect_publish().await.topic, "$SYS/x");
    sys.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_exactly_one_member() {
    let b = Broker::start().await;
    let mut members = Vec::new();
    for id in ["member-a", "member-b"] {
        let mut m = client(&b, V5, id).await;
        assert_eq!(
            m.subscribe(1, "$share/g/sh/t", QoS::AtLeastOnce)
                .await
                .reason_codes,
            [1]
        );
        members.push(m);
    }
    let mut p = client(&b, V5, "share-pub").await;
    const N: u16 = 20;
    for i in 1..=N {
        p.publish_qos1("sh/t", format!("{i}"), i).await;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_member = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while per_member.iter().sum::<usize>() < usize::from(N) {
        assert!(Instant::now() < deadline, "only {per_member:?} arrived");
        for (i, m) in members.iter_mut().enumerate() {
            if let Some(Packet::Publish(msg)) = m.recv_within(Duration::from_millis(50)).await {
                assert_eq!(&*msg.topic, "sh/t");
                m.puback(msg.packet_id).await;
                let payload = String::from_utf8(msg.payload.to_vec()).expect("utf-8");
                *seen.entry(payload).or_default() += 1;
                per_member[i] += 1;
            }
        }
    }
    // [MQTT-4.8.2] each message to exactly one member, and both got some.
    assert_eq!(seen.len(), usize::from(N));
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert!(per_member.iter().all(|&n| n > 0), "{per_member:?}");
    for m in &mut members {
        m.expect_nothing(QUIET).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn no_local_suppresses_the_clients_own_messages() {
    let b = Broker::start().await;
    let mut a = client(&b, V5, "nl-a").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    a.subscribe_opts(1, "nl/t", no_local, None).await;
    let mut other = client(&b, V5, "nl-b").await;
    a.publish("nl/t", b"own", QoS::AtMostOnce, false, 0).await;
    other
        .publish("nl/t", b"other", QoS::AtMostOnce, false, 0)
        .await;
    // [MQTT-3.8.3-3]
    assert_eq!(&a.expect_publish().await.payload[..], b"other");
    a.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let b = Broker::start().await;
    let mut a = client(&b, V5, "nl-shared").await;
    let s = Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: ByteString::from("$share/g/t"),
            options: SubscriptionOptions {
                no_local: true,
                ..opts(QoS::AtMostOnce)
            },
        }],
        properties: SubscribeProperties::default(),
    };
    a.send(Packet::Subscribe(s)).await;
    // [MQTT-3.8.3-4]
    assert_eq!(
        a.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::PROTOCOL_ERROR
        ))]
    );
    b.stop().await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_and_the_default_clears_it() {
    let b = Broker::start().await;
    let mut rap = client(&b, V5, "rap").await;
    let keep = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtMostOnce)
    };
    rap.subscribe_opts(1, "rap/t", keep, None).await;
    let mut plain = client(&b, V5, "plain").await;
    plain.subscribe(1, "rap/t", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "rap-pub").await;
    p.publish("rap/t", b"r", QoS::AtMostOnce, true, 0).await;
    // [MQTT-3.3.1-13] / [MQTT-3.3.1-12]
    assert!(rap.expect_publish().await.retain);
    assert!(!plain.expect_publish().await.retain);
    p.publish("rap/t", b"n", QoS::AtMostOnce, false, 0).await;
    assert!(!rap.expect_publish().await.retain);
    b.stop().await;
}

#[tokio::test]
async fn delivered_publish_carries_the_subscription_identifier_of_the_current_subscription() {
    let b = Broker::start().await;
    let mut s = client(&b, V5, "sid").await;
    s.subscribe_opts(1, "sid/t", opts(QoS::AtMostOnce), Some(42))
        .await;
    let mut p = client(&b, V5, "sid-pub").await;
    p.publish("sid/t", b"1", QoS::AtMostOnce, false, 0).await;
    assert_eq!(
        s.expect_publish().await.properties.subscription_identifiers,
        [42]
    );
    // Subscribing again without an identifier replaces the subscription
    // [MQTT-3.8.4-3], and with it the identifier.
    s.subscribe_opts(2, "sid/t", opts(QoS::AtMostOnce), None)
        .await;
    p.publish("sid/t", b"2", QoS::AtMostOnce, false, 0).await;
    assert_eq!(
        s.expect_publish().await.properties.subscription_identifiers,
        Vec::<u32>::new()
    );
    b.stop().await;
}

#[tokio::test]
async fn inbound_topic_alias_is_resolved_for_later_publishes_with_an_empty_topic() {
    let b = Broker::start().await;
    let mut s = client(&b, V5, "alias-in-sub").await;
    s.subscribe(1, "al/#", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "alias-in-pub").await;
    let mut first = publish("al/long/topic", &b"1"[..], QoS::AtMostOnce, 0);
    first.properties.topic_alias = Some(1);
    p.send_publish(first).await;
    let mut second = publish("", &b"2"[..], QoS::AtMostOnce, 0);
    second.properties.topic_alias = Some(1);
    p.send_publish(second).await;
    for payload in [b"1", b"2"] {
        let m = s.expect_publish().await;
        // [MQTT-3.3.2-12] the alias is resolved; the subscriber, which
        // allowed no aliases, gets the full topic and no alias.
        assert_eq!((&*m.topic, &m.payload[..]), ("al/long/topic", &payload[..]));
        assert_eq!(m.properties.topic_alias, None);
    }
    b.stop().await;
}

#[tokio::test]
async fn inbound_topic_alias_errors_close_the_connection() {
    let b = Broker::start_with(|cfg| cfg.mqtt.max_topic_alias = 4).await;
    // Above our Topic Alias Maximum: 0x94. [MQTT-3.3.2-9]
    let mut p = client(&b, V5, "alias-big").await;
    let mut m = publish("t", &b"x"[..], QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(5);
    p.send_publish(m).await;
    assert_eq!(
        p.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::TOPIC_ALIAS_INVALID
        ))]
    );
    // An empty topic with an alias never set: protocol error.
    let mut p = client(&b, V5, "alias-unknown").await;
    let mut m = publish("", &b"x"[..], QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(2);
    p.send_publish(m).await;
    assert_eq!(
        p.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::PROTOCOL_ERROR
        ))]
    );
    b.stop().await;
}

/// A 5.0 subscriber that resolves topic aliases as a client must: panics
/// on an alias it was never told about.
struct AliasResolver(HashMap<u16, ByteString>);

impl AliasResolver {
    fn resolve(&mut self, p: &Publish) -> ByteString {
        match p.properties.topic_alias {
            None => p.topic.clone(),
            Some(a) if !p.topic.is_empty() => {
                self.0.insert(a, p.topic.clone());
                p.topic.clone()
            }
            Some(a) => self
                .0
                .get(&a)
                .cloned()
                .unwrap_or_else(|| panic!("alias {a} was never set [MQTT-3.3.2-12]")),
        }
    }
}

#[tokio::test]
async fn outbound_topic_alias_is_used_when_the_client_allows_it() {
    let b = Broker::start().await;
    let mut c = connect_packet(V5, "alias-out", true);
    c.properties.topic_alias_maximum = Some(1);
    let (mut s, _) = Raw::connect_with(b.addr, c).await;
    s.subscribe(1, "ao/#", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "alias-out-pub").await;
    for topic in ["ao/first", "ao/first", "ao/second", "ao/first"] {
        p.publish(topic, b"x", QoS::AtMostOnce, false, 0).await;
    }
    let m = s.expect_publish().await;
    assert_eq!((&*m.topic, m.properties.topic_alias), ("ao/first", Some(1)));
    let m = s.expect_publish().await;
    // The second message on the topic: empty topic, alias only.
    assert_eq!((&*m.topic, m.properties.topic_alias), ("", Some(1)));
    // No alias left for a second topic: sent in full [MQTT-3.3.2-10].
    let m = s.expect_publish().await;
    assert_eq!((&*m.topic, m.properties.topic_alias), ("ao/second", None));
    let m = s.expect_publish().await;
    assert_eq!((&*m.topic, m.properties.topic_alias), ("", Some(1)));
    b.stop().await;
}

/// Connects a 5.0 subscriber with a Maximum Packet Size of 100 bytes.
async fn small_client(b: &Broker, id: &str, receive_maximum: u16, aliases: u16) -> Raw {
    let mut c = connect_packet(V5, id, true);
    c.properties.maximum_packet_size = Some(100);
    c.properties.receive_maximum = Some(receive_maximum);
    c.properties.topic_alias_maximum = Some(aliases);
    Raw::connect_with(b.addr, c).await.0
}

const BIG: [u8; 200] = [b'B'; 200];

#[tokio::test]
async fn message_larger_than_the_clients_maximum_packet_size_is_not_sent_but_others_are() {
    let b = Broker::start().await;
    let mut s = small_client(&b, "small0", 100, 0).await;
    s.subscribe(1, "mp/t", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "mp-pub").await;
    p.publish("mp/t", b"small-1", QoS::AtMostOnce, false, 0)
        .await;
    p.publish("mp/t", &BIG, QoS::AtMostOnce, false, 0).await;
    p.publish("mp/t", b"small-2", QoS::AtMostOnce, false, 0)
        .await;
    // [MQTT-3.1.2-24] discarded without sending.
    assert_eq!(&s.expect_publish().await.payload[..], b"small-1");
    assert_eq!(&s.expect_publish().await.payload[..], b"small-2");
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn oversize_qos1_message_does_not_take_a_slot_of_the_receive_window() {
    let b = Broker::start().await;
    let mut s = small_client(&b, "small1", 1, 0).await;
    s.subscribe(1, "mp1/t", QoS::AtLeastOnce).await;
    let mut p = client(&b, V5, "mp1-pub").await;
    p.publish_qos1("mp1/t", &b"small-1"[..], 1).await;
    p.publish_qos1("mp1/t", &BIG[..], 2).await;
    p.publish_qos1("mp1/t", &b"small-2"[..], 3).await;
    // [MQTT-3.1.2-25] the broker behaves as if it had completed sending the
    // oversize message: it does not wait for an acknowledgement of it.
    for expected in [&b"small-1"[..], &b"small-2"[..]] {
        let m = s.expect_publish().await;
        assert_eq!(&m.payload[..], expected);
        s.puback(m.packet_id).await;
    }
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn oversize_message_does_not_establish_a_topic_alias() {
    let b = Broker::start().await;
    let mut s = small_client(&b, "small-alias", 100, 4).await;
    s.subscribe(1, "mpa/t", QoS::AtMostOnce).await;
    let mut p = client(&b, V5, "mpa-pub").await;
    p.publish("mpa/t", &BIG, QoS::AtMostOnce, false, 0).await;
    p.publish("mpa/t", b"small-1", QoS::AtMostOnce, false, 0)
        .await;
    p.publish("mpa/t", b"small-2", QoS::AtMostOnce, false, 0)
        .await;
    let mut aliases = AliasResolver(HashMap::new());
    for expected in [&b"small-1"[..], &b"small-2"[..]] {
        let m = s.expect_publish().await;
        assert_eq!(&m.payload[..], expected);
        assert_eq!(&*aliases.resolve(&m), "mpa/t");
    }
    b.stop().await;
}

#[tokio::test]
async fn publish_larger_than_the_brokers_max_packet_size_closes_with_0x95() {
    let b = Broker::start_with(|cfg| cfg.mqtt.max_packet_size = ByteSize::bytes(128)).await;
    let mut s = client(&b, V5, "mps-sub").await;
    s.subscribe(1, "mps/t", QoS::AtMostOnce).await;
    let mut p5 = client(&b, V5, "mps-pub5").await;
    p5.publish("mps/t", &BIG, QoS::AtMostOnce, false, 0).await;
    assert_eq!(
        p5.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::PACKET_TOO_LARGE
        ))]
    );
    let mut p4 = client(&b, V311, "mps-pub4").await;
    p4.publish("mps/t", &BIG, QoS::AtMostOnce, false, 0).await;
    assert_eq!(p4.expect_closed().await, []);
    // Neither got through; the subscriber is still served.
    let mut p = client(&b, V5, "mps-ok").await;
    p.publish("mps/t", b"fits", QoS::AtMostOnce, false, 0).await;
    assert_eq!(&s.expect_publish().await.payload[..], b"fits");
    b.stop().await;
}

#[tokio::test]
async fn message_expiry_drops_expired_queued_messages_and_sends_the_remaining_interval() {
    let b = Broker::start().await;
    let (mut s, _) = Raw::connect_with(b.addr, persistent_v5("expiry", 60)).await;
    s.subscribe(1, "ex/t", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let mut p = client(&b, V5, "expiry-pub").await;
    for (id, payload, expiry) in [
        (1, "short", Some(1)),
        (2, "long", Some(30)),
        (3, "none", None),
    ] {
        let mut m = publish("ex/t", payload, QoS::AtLeastOnce, id);
        m.properties.message_expiry_interval = expiry;
        p.send_publish(m).await;
        assert_eq!(p.recv().await, Some(Packet::PubAck(Ack::new(id))));
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let (mut s, ack) = Raw::connect_with(b.addr, persistent_v5("expiry", 60)).await;
    assert!(ack.session_present);
    // [MQTT-3.3.2-5] the expired one is not delivered.
    let m = s.expect_publish().await;
    assert_eq!(&m.payload[..], b"long");
    // [MQTT-3.3.2-6] the time it waited is taken off the interval.
    let left = m.properties.message_expiry_interval.expect("interval");
    assert!((27..30).contains(&left), "remaining interval {left}");
    s.puback(m.packet_id).await;
    let m = s.expect_publish().await;
    assert_eq!(&m.payload[..], b"none");
    assert_eq!(m.properties.message_expiry_interval, None);
    s.puback(m.packet_id).await;
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn wildcard_in_a_publish_topic_closes_with_0x90() {
    let b = Broker::start().await;
    for topic in ["inv/+", "inv/#"] {
        let mut p = client(&b, V5, "inv-pub5").await;
        p.publish(topic, b"x", QoS::AtMostOnce, false, 0).await;
        // [MQTT-3.3.2-2]
        assert_eq!(
            p.expect_closed().await,
            [Packet::Disconnect(Disconnect::with_reason(
                reason::TOPIC_NAME_INVALID
            ))],
            "topic {topic}"
        );
    }
    let mut p4 = client(&b, V311, "inv-pub4").await;
    p4.publish("inv/+", b"x", QoS::AtMostOnce, false, 0).await;
    assert_eq!(p4.expect_closed().await, []);
    b.stop().await;
}

#[tokio::test]
async fn invalid_filter_gets_suback_0x8f_in_v5_and_0x80_in_v311_and_the_rest_is_granted() {
    let b = Broker::start().await;
    for (version, refused) in [(V5, reason::TOPIC_FILTER_INVALID), (V311, 0x80)] {
        let mut c = client(&b, version, "bad-filter").await;
        let filters = ["a/#/b", "ok/+", "a+", "$share/g", "$share//t"];
        let s = Subscribe {
            packet_id: 5,
            filters: filters
                .iter()
                .map(|f| SubscribeFilter {
                    filter: ByteString::from(*f),
                    options: opts(QoS::AtLeastOnce),
                })
                .collect(),
            properties: SubscribeProperties::default(),
        };
        c.send(Packet::Subscribe(s)).await;
        let Some(Packet::SubAck(ack)) = c.recv().await else {
            panic!("expected SUBACK");
        };
        assert_eq!(ack.packet_id, 5);
        assert_eq!(
            ack.reason_codes,
            [refused, 1, refused, refused, refused],
            "{version:?}"
        );
        // The connection stays up and the valid filter works.
        c.publish("ok/x", b"y", QoS::AtMostOnce, false, 0).await;
        assert_eq!(&*c.expect_publish().await.topic, "ok/x");
    }
    b.stop().await;
}

#[tokio::test]
async fn unsubscribe_answers_0x11_for_a_filter_that_was_not_subscribed() {
    let b = Broker::start().await;
    let mut c = client(&b, V5, "unsub").await;
    c.subscribe(1, "un/t", QoS::AtMostOnce).await;
    let u = Unsubscribe {
        packet_id: 2,
        filters: vec![ByteString::from("un/t"), ByteString::from("never/t")],
        user_properties: Vec::new(),
    };
    c.send(Packet::Unsubscribe(u.clone())).await;
    let Some(Packet::UnsubAck(ack)) = c.recv().await else {
        panic!("expected UNSUBACK");
    };
    assert_eq!(ack.packet_id, 2);
    assert_eq!(
        ack.reason_codes,
        [reason::SUCCESS, reason::NO_SUBSCRIPTION_EXISTED]
    );
    // Really gone.
    c.publish("un/t", b"x", QoS::AtMostOnce, false, 0).await;
    c.expect_nothing(QUIET).await;

    // 3.1.1 UNSUBACK carries no codes. [MQTT-3.11.3]
    let mut c4 = client(&b, V311, "unsub4").await;
    c4.send(Packet::Unsubscribe(u)).await;
    assert_eq!(
        c4.recv().await,
        Some(Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            ..UnsubAck::default()
        }))
    );
    b.stop().await;
}

#[tokio::test]
async fn max_subscriptions_refuses_new_filters_beyond_the_limit() {
    let b = Broker::start_with(|cfg| cfg.mqtt.max_subscriptions = 2).await;
    for (version, refused) in [(V5, reason::QUOTA_EXCEEDED), (V311, 0x80)] {
        let mut c = client(&b, version, "limited").await;
        assert_eq!(
            c.subscribe(1, "lim/1", QoS::AtMostOnce).await.reason_codes,
            [0]
        );
        assert_eq!(
            c.subscribe(2, "lim/2", QoS::AtMostOnce).await.reason_codes,
            [0]
        );
        assert_eq!(
            c.subscribe(3, "lim/3", QoS::AtMostOnce).await.reason_codes,
            [refused]
        );
        // Replacing an existing subscription is not a new one.
        assert_eq!(
            c.subscribe(4, "lim/2", QoS::AtLeastOnce).await.reason_codes,
            [1]
        );
        c.publish("lim/3", b"x", QoS::AtMostOnce, false, 0).await;
        c.publish("lim/1", b"y", QoS::AtMostOnce, false, 0).await;
        assert_eq!(&*c.expect_publish().await.topic, "lim/1");
        c.disconnect().await;
    }
    b.stop().await;
}
