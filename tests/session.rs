//! Sessions over real TCP: what survives a reconnect (subscriptions, queued
//! messages, the QoS 1/2 state in both directions), what clean start and
//! session expiry discard, takeover, the bounded offline queue and the
//! client's Receive Maximum.

mod common;

use std::time::{Duration, Instant};

use common::{connect_packet, eventually, persistent_v5, publish, Broker, Raw, QUIET};
use roost_actors::registry::RegistryMsg;
use roost_protocol::packet::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// Connects with clean start off and a session expiry of one minute.
async fn resume(b: &Broker, id: &str) -> (Raw, ConnAck) {
    Raw::connect_with(b.addr, persistent_v5(id, 60)).await
}

async fn publisher(b: &Broker) -> Raw {
    Raw::connect(b.addr, V5, "publisher", true).await.0
}

fn payload(i: u16) -> bytes::Bytes {
    bytes::Bytes::from(format!("m{i}"))
}

async fn session_count(b: &Broker) -> usize {
    let registry = b.node().ctx().registry().expect("registry running");
    ractor::call!(registry, RegistryMsg::Count).expect("registry answers")
}

#[tokio::test]
async fn v5_resumed_session_is_present_and_gets_qos1_messages_queued_while_offline_in_order() {
    let b = Broker::start().await;
    let (mut s, ack) = resume(&b, "offline5").await;
    assert!(!ack.session_present, "no session existed");
    s.subscribe(1, "q/#", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let mut p = publisher(&b).await;
    for i in 1..=5 {
        p.publish_qos1("q/t", payload(i), i).await;
    }

    let (mut s, ack) = resume(&b, "offline5").await;
    assert!(ack.session_present, "[MQTT-3.2.2-2]");
    for i in 1..=5 {
        let m = s.expect_publish().await;
        assert_eq!(m.payload, payload(i), "in publish order [MQTT-4.6.0-5]");
        assert_eq!((m.qos, m.dup), (QoS::AtLeastOnce, false));
        s.puback(m.packet_id).await;
    }
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn v311_persistent_session_keeps_subscriptions_and_queues_messages() {
    let b = Broker::start().await;
    let (mut s, ack) = Raw::connect(b.addr, V311, "offline4", false).await;
    assert!(!ack.session_present);
    s.subscribe(1, "q4/t", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let mut p = publisher(&b).await;
    p.publish_qos1("q4/t", &b"queued"[..], 1).await;

    let (mut s, ack) = Raw::connect(b.addr, V311, "offline4", false).await;
    assert!(ack.session_present);
    let m = s.expect_publish().await;
    assert_eq!(&m.payload[..], b"queued");
    s.puback(m.packet_id).await;
    // The subscription itself survived too.
    p.publish_qos1("q4/t", &b"live"[..], 2).await;
    assert_eq!(&s.expect_publish().await.payload[..], b"live");
    b.stop().await;
}

#[tokio::test]
async fn unacknowledged_qos1_messages_are_redelivered_with_dup_on_reconnect() {
    let b = Broker::start().await;
    let (mut s, _) = resume(&b, "redeliver").await;
    s.subscribe(1, "r/t", QoS::AtLeastOnce).await;
    let mut p = publisher(&b).await;
    p.publish_qos1("r/t", payload(1), 1).await;
    p.publish_qos1("r/t", payload(2), 2).await;
    let first = [s.expect_publish().await, s.expect_publish().await];
    assert!(first.iter().all(|m| !m.dup));
    drop(s); // no PUBACK, and the socket just goes away

    let (mut s, ack) = resume(&b, "redeliver").await;
    assert!(ack.session_present);
    for (i, before) in first.iter().enumerate() {
        let m = s.expect_publish().await;
        // [MQTT-4.4.0-1] same packet id, same order, DUP set [MQTT-3.3.1-1].
        assert!(m.dup, "redelivery {i} has DUP");
        assert_eq!(
            (m.packet_id, &m.payload),
            (before.packet_id, &before.payload)
        );
        s.puback(m.packet_id).await;
    }
    s.expect_nothing(QUIET).await;
    s.disconnect().await;

    // Acknowledged now: a further reconnect resends nothing.
    let (mut s, ack) = resume(&b, "redeliver").await;
    assert!(ack.session_present);
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn outbound_qos2_after_pubrec_resumes_with_pubrel_on_reconnect() {
    let b = Broker::start().await;
    let (mut s, _) = resume(&b, "q2out").await;
    s.subscribe(1, "q2/t", QoS::ExactlyOnce).await;
    let mut p = publisher(&b).await;
    p.send_publish(publish("q2/t", &b"once"[..], QoS::ExactlyOnce, 9))
        .await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(9))));
    p.pubrel(9).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(9))));

    let m = s.expect_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    s.pubrec(m.packet_id).await;
    assert_eq!(s.recv().await, Some(Packet::PubRel(Ack::new(m.packet_id))));
    drop(s); // before PUBCOMP

    let (mut s, ack) = resume(&b, "q2out").await;
    assert!(ack.session_present);
    // [MQTT-4.4.0-1] the PUBREL is resent, not the PUBLISH.
    assert_eq!(s.recv().await, Some(Packet::PubRel(Ack::new(m.packet_id))));
    s.pubcomp(m.packet_id).await;
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn outbound_qos2_before_pubrec_is_resent_with_dup_on_reconnect() {
    let b = Broker::start().await;
    let (mut s, _) = resume(&b, "q2dup").await;
    s.subscribe(1, "q2d/t", QoS::ExactlyOnce).await;
    let mut p = publisher(&b).await;
    p.send_publish(publish("q2d/t", &b"x"[..], QoS::ExactlyOnce, 1))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    let m = s.expect_publish().await;
    drop(s);

    let (mut s, _) = resume(&b, "q2dup").await;
    let again = s.expect_publish().await;
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, again.qos),
        (m.packet_id, QoS::ExactlyOnce)
    );
    s.pubrec(again.packet_id).await;
    assert_eq!(s.recv().await, Some(Packet::PubRel(Ack::new(m.packet_id))));
    s.pubcomp(again.packet_id).await;
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn inbound_qos2_resent_with_dup_before_pubrel_is_delivered_once() {
    let b = Broker::start().await;
    let (mut s, _) = Raw::connect(b.addr, V5, "q2in-sub", true).await;
    s.subscribe(1, "q2in/t", QoS::AtMostOnce).await;
    let (mut p, _) = Raw::connect(b.addr, V5, "q2in-pub", true).await;

    let first = publish("q2in/t", &b"one"[..], QoS::ExactlyOnce, 7);
    p.send_publish(first.clone()).await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(7))));
    // The PUBREC "got lost": the client resends with DUP. [MQTT-4.3.3-10]
    p.send_publish(Publish { dup: true, ..first }).await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(7))));
    p.pubrel(7).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(7))));

    // Packet id 7 is free again: a new message with it is a new message.
    p.send_publish(publish("q2in/t", &b"two"[..], QoS::ExactlyOnce, 7))
        .await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(7))));
    p.pubrel(7).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(7))));

    assert_eq!(&s.expect_publish().await.payload[..], b"one");
    assert_eq!(&s.expect_publish().await.payload[..], b"two");
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn inbound_qos2_state_survives_a_reconnect_so_the_resend_is_not_delivered_again() {
    let b = Broker::start().await;
    let (mut s, _) = Raw::connect(b.addr, V5, "q2r-sub", true).await;
    s.subscribe(1, "q2r/t", QoS::AtMostOnce).await;

    let (mut p, _) = resume(&b, "q2r-pub").await;
    let m = publish("q2r/t", &b"one"[..], QoS::ExactlyOnce, 3);
    p.send_publish(m.clone()).await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(3))));
    drop(p);

    // [MQTT-4.1.0-2] the ids awaiting PUBREL are session state.
    let (mut p, ack) = resume(&b, "q2r-pub").await;
    assert!(ack.session_present);
    p.send_publish(Publish { dup: true, ..m }).await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(3))));
    p.pubrel(3).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(3))));

    assert_eq!(&s.expect_publish().await.payload[..], b"one");
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn clean_start_discards_the_old_session_its_queue_and_its_subscriptions() {
    let b = Broker::start().await;
    let (mut s, _) = resume(&b, "cleaner").await;
    s.subscribe(1, "c/old", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut p = publisher(&b).await;
    p.publish_qos1("c/old", &b"queued"[..], 1).await;

    let mut c = persistent_v5("cleaner", 60);
    c.clean_start = true;
    let (mut s, ack) = Raw::connect_with(b.addr, c).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-2]");
    s.subscribe(1, "c/sentinel", QoS::AtLeastOnce).await;
    p.publish_qos1("c/old", &b"after"[..], 2).await;
    p.publish_qos1("c/sentinel", &b"sentinel"[..], 3).await;
    // Neither the queued message nor one for the old subscription arrives:
    // the first thing the new session gets is the sentinel.
    assert_eq!(&s.expect_publish().await.payload[..], b"sentinel");
    b.stop().await;
}

#[tokio::test]
async fn session_is_gone_after_its_expiry_interval() {
    let b = Broker::start().await;
    let (mut s, _) = Raw::connect_with(b.addr, persistent_v5("expiring", 1)).await;
    s.subscribe(1, "e/t", QoS::AtLeastOnce).await;
    let closed = Instant::now();
    s.disconnect().await;
    assert_eq!(
        session_count(&b).await,
        1,
        "the session outlives the connection"
    );

    assert!(eventually(|| async { session_count(&b).await == 0 }).await);
    let took = closed.elapsed();
    assert!(took >= Duration::from_millis(950), "expired after {took:?}");

    let (mut s, ack) = Raw::connect_with(b.addr, persistent_v5("expiring", 1)).await;
    assert!(!ack.session_present);
    s.subscribe(2, "e/sentinel", QoS::AtLeastOnce).await;
    let mut p = publisher(&b).await;
    p.publish_qos1("e/t", &b"old-sub"[..], 1).await;
    p.publish_qos1("e/sentinel", &b"sentinel"[..], 2).await;
    assert_eq!(&s.expect_publish().await.payload[..], b"sentinel");
    b.stop().await;
}

#[tokio::test]
async fn v5_takeover_sends_disconnect_0x8e_to_the_first_connection_and_keeps_the_session() {
    let b = Broker::start().await;
    let (mut first, _) = resume(&b, "taken").await;
    first.subscribe(1, "tk/t", QoS::AtLeastOnce).await;

    let (mut second, ack) = resume(&b, "taken").await;
    assert_eq!(ack.code, reason::SUCCESS);
    assert!(ack.session_present);
    // [MQTT-3.1.4-3]
    assert_eq!(
        first.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::SESSION_TAKEN_OVER
        ))]
    );
    let mut p = publisher(&b).await;
    p.publish_qos1("tk/t", &b"to-second"[..], 1).await;
    assert_eq!(&second.expect_publish().await.payload[..], b"to-second");
    b.stop().await;
}

#[tokio::test]
async fn v311_takeover_closes_the_first_connection_and_keeps_the_session() {
    let b = Broker::start().await;
    let (mut first, _) = Raw::connect(b.addr, V311, "taken4", false).await;
    first.subscribe(1, "tk4/t", QoS::AtLeastOnce).await;
    let (mut second, ack) = Raw::connect(b.addr, V311, "taken4", false).await;
    assert!(ack.session_present);
    assert_eq!(first.expect_closed().await, []);
    let mut p = publisher(&b).await;
    p.publish_qos1("tk4/t", &b"to-second"[..], 1).await;
    assert_eq!(&second.expect_publish().await.payload[..], b"to-second");
    b.stop().await;
}

#[tokio::test]
async fn full_offline_queue_of_a_stored_session_refuses_the_newest_messages() {
    // A persistent session's queue is on disk (docs/ARCHITECTURE.md,
    // durability): when full it refuses the newest message, so what the
    // subscriber gets is a gap-free prefix. Counted as queue_full.
    let b = Broker::start_with(|cfg| cfg.mqtt.max_mqueue_len = 3).await;
    let (mut s, _) = resume(&b, "full").await;
    s.subscribe(1, "f/t", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut p = publisher(&b).await;
    for i in 1..=6 {
        p.publish_qos1("f/t", payload(i), i).await;
    }
    let (mut s, _) = resume(&b, "full").await;
    for i in 1..=3 {
        let m = s.expect_publish().await;
        assert_eq!(m.payload, payload(i), "the oldest three, in order");
        s.puback(m.packet_id).await;
    }
    s.expect_nothing(QUIET).await;
    let counters = &b.node().ctx().counters;
    assert_eq!(
        counters
            .messages_dropped_queue_full
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    b.stop().await;
}

#[tokio::test]
async fn client_receive_maximum_bounds_unacknowledged_qos1_deliveries() {
    let b = Broker::start().await;
    let mut c = connect_packet(V5, "rm2", true);
    c.properties.receive_maximum = Some(2);
    let (mut s, _) = Raw::connect_with(b.addr, c).await;
    s.subscribe(1, "rm/t", QoS::AtLeastOnce).await;
    let mut p = publisher(&b).await;
    for i in 1..=6 {
        p.publish_qos1("rm/t", payload(i), i).await;
    }
    // [MQTT-3.3.4-9] two in flight, then the window is closed.
    let m1 = s.expect_publish().await;
    let m2 = s.expect_publish().await;
    assert_eq!(
        (m1.payload.clone(), m2.payload.clone()),
        (payload(1), payload(2))
    );
    s.expect_nothing(QUIET).await;

    // Each PUBACK opens room for exactly one more.
    s.puback(m1.packet_id).await;
    let m3 = s.expect_publish().await;
    assert_eq!(m3.payload, payload(3));
    s.expect_nothing(QUIET).await;

    let mut outstanding = vec![m2, m3];
    for i in 4..=6 {
        let oldest = outstanding.remove(0);
        s.puback(oldest.packet_id).await;
        let m = s.expect_publish().await;
        assert_eq!(m.payload, payload(i));
        outstanding.push(m);
    }
    for m in outstanding {
        s.puback(m.packet_id).await;
    }
    s.expect_nothing(QUIET).await;
    b.stop().await;
}

/// Polls a rumqttc event loop until `f` picks something out (bounded).
async fn poll_until<T>(
    el: &mut rumqttc::EventLoop,
    mut f: impl FnMut(rumqttc::Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(common::WAIT, async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if let Some(t) = f(p) {
                        return t;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("connection error: {e}"),
            }
        }
    })
    .await
    .expect("in time")
}

#[tokio::test]
async fn rumqttc_persistent_session_gets_messages_published_while_it_was_away() {
    use rumqttc::{AsyncClient, MqttOptions, Packet as P};
    let b = Broker::start().await;
    let options = || {
        let mut o = MqttOptions::new("rumq-persistent", b.addr.ip().to_string(), b.addr.port());
        o.set_clean_session(false);
        o
    };
    let (client, mut el) = AsyncClient::new(options(), 10);
    client
        .subscribe("rq/t", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut el, |p| matches!(p, P::SubAck(_)).then_some(())).await;
    client.disconnect().await.unwrap();
    // The event loop ends once the DISCONNECT is out.
    tokio::time::timeout(common::WAIT, async { while el.poll().await.is_ok() {} })
        .await
        .expect("disconnects in time");
    drop(el);
    assert!(eventually(|| async { session_count(&b).await == 1 }).await);

    let mut p = publisher(&b).await;
    p.publish_qos1("rq/t", &b"while-away"[..], 1).await;

    let (_client, mut el) = AsyncClient::new(options(), 10);
    let present = poll_until(&mut el, |p| match p {
        P::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(present);
    let m = poll_until(&mut el, |p| match p {
        P::Publish(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((&m.topic[..], &m.payload[..]), ("rq/t", &b"while-away"[..]));
    b.stop().await;
}
