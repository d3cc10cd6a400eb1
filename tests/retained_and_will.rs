//! Retained messages and wills over real TCP: set, replace and delete a
//! retained message, the Retain Handling option, shared subscriptions; when
//! a will is published and when not, the will delay, the will's RETAIN flag.

mod common;

use std::time::{Duration, Instant};

use common::{connect_packet, opts, persistent_v5, will, Broker, Raw, QUIET};
use roost_protocol::packet::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

async fn client(b: &Broker, id: &str) -> Raw {
    Raw::connect(b.addr, V5, id, true).await.0
}

async fn watcher(b: &Broker, id: &str, filter: &str) -> Raw {
    let mut w = client(b, id).await;
    w.subscribe(1, filter, QoS::AtLeastOnce).await;
    w
}

/// Subscribes a fresh client and returns the retained payloads it is sent
/// at once, in topic order.
async fn retained_on_subscribe(b: &Broker, id: &str, filter: &str) -> Vec<(String, Vec<u8>)> {
    let mut c = client(b, id).await;
    c.subscribe(1, filter, QoS::AtMostOnce).await;
    let mut got = Vec::new();
    while let Some(p) = c.recv_within(QUIET).await {
        let Packet::Publish(p) = p else {
            panic!("expected PUBLISH, got {p:?}");
        };
        assert!(
            p.retain,
            "a retained message sent on subscribe has RETAIN [MQTT-3.3.1-9]"
        );
        got.push((p.topic.to_string(), p.payload.to_vec()));
    }
    got.sort();
    got
}

#[tokio::test]
async fn retained_message_is_set_replaced_deleted_and_sent_on_subscribe_with_retain() {
    let b = Broker::start().await;
    let mut p = client(&b, "ret-pub").await;
    p.publish("ret/a", b"a1", QoS::AtMostOnce, true, 0).await;
    p.publish("ret/b", b"b1", QoS::AtMostOnce, true, 0).await;
    // Not retained: never stored.
    p.publish("ret/c", b"c1", QoS::AtMostOnce, false, 0).await;
    p.publish_qos1("ret/sync", &b""[..], 1).await;
    assert_eq!(
        retained_on_subscribe(&b, "ret-s1", "ret/#").await,
        [
            ("ret/a".into(), b"a1".to_vec()),
            ("ret/b".into(), b"b1".to_vec())
        ]
    );

    // [MQTT-3.3.1-5] a new retained message replaces the old one.
    p.publish("ret/a", b"a2", QoS::AtMostOnce, true, 0).await;
    // [MQTT-3.3.1-10] an empty retained payload deletes.
    p.publish("ret/b", b"", QoS::AtMostOnce, true, 0).await;
    p.publish_qos1("ret/sync", &b""[..], 2).await;
    assert_eq!(
        retained_on_subscribe(&b, "ret-s2", "ret/#").await,
        [("ret/a".into(), b"a2".to_vec())]
    );
    // Exact filters are served too.
    assert_eq!(
        retained_on_subscribe(&b, "ret-s3", "ret/a").await,
        [("ret/a".into(), b"a2".to_vec())]
    );
    b.stop().await;
}

#[tokio::test]
async fn retained_message_keeps_its_qos_up_to_the_granted_qos() {
    let b = Broker::start().await;
    let mut p = client(&b, "retq-pub").await;
    p.send_publish(Publish {
        retain: true,
        ..common::publish("retq/t", &b"q1"[..], QoS::AtLeastOnce, 1)
    })
    .await;
    assert_eq!(p.recv().await, Some(Packet::PubAck(Ack::new(1))));
    let mut s = client(&b, "retq-sub").await;
    s.subscribe(1, "retq/t", QoS::ExactlyOnce).await;
    let m = s.expect_publish().await;
    assert_eq!((m.qos, m.retain), (QoS::AtLeastOnce, true));
    s.puback(m.packet_id).await;
    let mut s0 = client(&b, "retq-sub0").await;
    s0.subscribe(1, "retq/t", QoS::AtMostOnce).await;
    assert_eq!(s0.expect_publish().await.qos, QoS::AtMostOnce);
    b.stop().await;
}

#[tokio::test]
async fn retain_handling_0_sends_on_every_subscribe_1_only_on_a_new_one_2_never() {
    let b = Broker::start().await;
    let mut p = client(&b, "rh-pub").await;
    p.send_publish(Publish {
        retain: true,
        ..common::publish("rh/t", &b"kept"[..], QoS::AtMostOnce, 0)
    })
    .await;
    p.publish_qos1("rh/sync", &b""[..], 2).await;

    let mut c = client(&b, "rh-sub").await;
    for (handling, first, again) in [
        (RetainHandling::OnSubscribe, true, true),
        (RetainHandling::OnNewSubscribe, true, false),
        (RetainHandling::Never, false, false),
    ] {
        let o = SubscriptionOptions {
            retain_handling: handling,
            ..opts(QoS::AtMostOnce)
        };
        // [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]
        for (round, expected) in [("new", first), ("existing", again)] {
            c.subscribe_opts(1, "rh/t", o, None).await;
            let got = c.recv_within(QUIET).await;
            assert_eq!(
                got.is_some(),
                expected,
                "{handling:?}, {round} subscription: {got:?}"
            );
        }
        let u = Unsubscribe {
            packet_id: 2,
            filters: vec!["rh/t".into()],
            user_properties: Vec::new(),
        };
        c.send(Packet::Unsubscribe(u)).await;
        assert!(matches!(c.recv().await, Some(Packet::UnsubAck(_))));
    }
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_are_not_sent_to_shared_subscriptions() {
    let b = Broker::start().await;
    let mut p = client(&b, "rs-pub").await;
    p.publish("rs/t", b"kept", QoS::AtMostOnce, true, 0).await;
    p.publish_qos1("rs/sync", &b""[..], 1).await;
    let mut s = client(&b, "rs-sub").await;
    s.subscribe(1, "$share/g/rs/t", QoS::AtMostOnce).await;
    // [MQTT-4.8.2] retained messages are not sent for a shared subscription.
    s.expect_nothing(QUIET).await;
    // Live messages are.
    p.publish("rs/t", b"live", QoS::AtMostOnce, false, 0).await;
    assert_eq!(&s.expect_publish().await.payload[..], b"live");
    b.stop().await;
}

/// A client with a will on `will/<id>`.
async fn with_will(b: &Broker, version: ProtocolVersion, id: &str) -> Raw {
    let mut c = connect_packet(version, id, true);
    c.will = Some(will(
        &format!("will/{id}"),
        b"dead",
        QoS::AtLeastOnce,
        false,
    ));
    Raw::connect_with(b.addr, c).await.0
}

/// Publishes a sentinel on `will/sentinel` and returns the topic of the
/// first message the watcher gets: a will sent before it shows up first.
async fn first_after(b: &Broker, w: &mut Raw) -> String {
    let mut p = client(b, "sentinel-pub").await;
    p.publish_qos1("will/sentinel", &b""[..], 1).await;
    let m = w.expect_publish().await;
    w.puback(m.packet_id).await;
    m.topic.to_string()
}

#[tokio::test]
async fn will_is_published_when_the_socket_is_dropped() {
    let b = Broker::start().await;
    let mut w = watcher(&b, "w-drop", "will/#").await;
    for (version, id) in [(V5, "drop5"), (V311, "drop4")] {
        let c = with_will(&b, version, id).await;
        drop(c);
        // [MQTT-3.1.2-8]
        let m = w.expect_publish().await;
        assert_eq!(
            (m.topic.to_string(), &m.payload[..]),
            (format!("will/{id}"), &b"dead"[..])
        );
        assert_eq!(m.qos, QoS::AtLeastOnce);
        w.puback(m.packet_id).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn no_will_after_a_normal_disconnect() {
    let b = Broker::start().await;
    let mut w = watcher(&b, "w-normal", "will/#").await;
    for (version, id) in [(V5, "normal5"), (V311, "normal4")] {
        let c = with_will(&b, version, id).await;
        // [MQTT-3.1.2-10] (5.0) / [MQTT-3.14.4-3] (3.1.1)
        c.disconnect().await;
        assert_eq!(first_after(&b, &mut w).await, "will/sentinel");
    }
    b.stop().await;
}

#[tokio::test]
async fn v5_disconnect_with_reason_0x04_publishes_the_will() {
    let b = Broker::start().await;
    let mut w = watcher(&b, "w-04", "will/#").await;
    let mut c = with_will(&b, V5, "with-will").await;
    c.send(Packet::Disconnect(Disconnect::with_reason(
        reason::DISCONNECT_WITH_WILL,
    )))
    .await;
    assert_eq!(c.expect_closed().await, []);
    assert_eq!(&*w.expect_publish().await.topic, "will/with-will");
    b.stop().await;
}

/// A 5.0 client with a session that outlives the connection and a will
/// delayed by `delay` seconds.
fn delayed_will(id: &str, delay: u32) -> Connect {
    let mut c = persistent_v5(id, 30);
    let mut w = will(&format!("will/{id}"), b"late", QoS::AtLeastOnce, false);
    w.properties.delay_interval = Some(delay);
    c.will = Some(w);
    c
}

#[tokio::test]
async fn delayed_will_is_published_after_the_will_delay_interval() {
    let b = Broker::start().await;
    let mut w = watcher(&b, "w-delay", "will/#").await;
    let (c, _) = Raw::connect_with(b.addr, delayed_will("delayed", 1)).await;
    let dropped = Instant::now();
    drop(c);
    let m = w.expect_publish().await;
    let took = dropped.elapsed();
    assert_eq!(&*m.topic, "will/delayed");
    // [MQTT-3.1.3-9] not before the delay.
    assert!(
        took >= Duration::from_millis(950),
        "published after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2_500),
        "published after {took:?}"
    );
    b.stop().await;
}

#[tokio::test]
async fn delayed_will_is_cancelled_when_the_client_reconnects_within_the_delay() {
    let b = Broker::start().await;
    let mut w = watcher(&b, "w-cancel", "will/#").await;
    let (c, _) = Raw::connect_with(b.addr, delayed_will("comeback", 1)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut back = persistent_v5("comeback", 30);
    back.will = None;
    let (_c, ack) = Raw::connect_with(b.addr, back).await;
    assert!(ack.session_present);
    // [MQTT-3.1.3-9] well past the delay: still no will.
    w.expect_nothing(Duration::from_millis(1_300)).await;
    b.stop().await;
}

#[tokio::test]
async fn will_with_retain_is_stored_as_a_retained_message() {
    let b = Broker::start().await;
    let mut c = connect_packet(V5, "ret-will", true);
    c.will = Some(will("will/retained", b"last words", QoS::AtMostOnce, true));
    let (c, _) = Raw::connect_with(b.addr, c).await;
    // Watch the live will first, so we know it has been published.
    let mut live = watcher(&b, "w-ret", "will/#").await;
    drop(c);
    let m = live.expect_publish().await;
    assert!(!m.retain, "live delivery clears RETAIN [MQTT-3.3.1-12]");
    // [MQTT-3.1.2-17] a will with Will Retain is published as retained.
    let mut late = client(&b, "w-late").await;
    late.subscribe(1, "will/retained", QoS::AtMostOnce).await;
    let m = late.expect_publish().await;
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"last words");
    b.stop().await;
}

#[tokio::test]
async fn rumqttc_client_will_is_published_when_its_connection_is_lost() {
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet as P};
    let b = Broker::start().await;
    let mut w = watcher(&b, "w-rumq", "will/#").await;
    let mut o = MqttOptions::new("rumq-will", b.addr.ip().to_string(), b.addr.port());
    o.set_last_will(LastWill::new(
        "will/rumq",
        "bye",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let (_client, mut el) = AsyncClient::new(o, 10);
    tokio::time::timeout(common::WAIT, async {
        while !matches!(el.poll().await, Ok(Event::Incoming(P::ConnAck(_)))) {}
    })
    .await
    .expect("connected in time");
    drop(el); // the socket closes without DISCONNECT
    let m = w.expect_publish().await;
    assert_eq!((&*m.topic, &m.payload[..]), ("will/rumq", &b"bye"[..]));
    b.stop().await;
}
