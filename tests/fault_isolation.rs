//! A crash inside one connection or session actor touches no other client.
//! The panics are injected through the test-only hooks of roost-actors
//! (feature `test-hooks`, see actors/src/test_hooks.rs).

mod common;

use std::time::Duration;

use common::{eventually, Broker, Raw};
use roost_actors::broker::Counters;
use roost_actors::test_hooks::{PANIC_CONNECTION_TOPIC, PANIC_SESSION_TOPIC};
use roost_protocol::packet::{Packet, ProtocolVersion, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;

async fn pair(b: &Broker, n: u32) -> (Raw, Raw) {
    let (mut sub, _) = Raw::connect(b.addr, V5, &format!("sub-{n}"), true).await;
    sub.subscribe(1, &format!("pair/{n}"), QoS::AtLeastOnce)
        .await;
    let (publ, _) = Raw::connect(b.addr, V5, &format!("pub-{n}"), true).await;
    (publ, sub)
}

async fn roundtrip(publ: &mut Raw, sub: &mut Raw, n: u32, packet_id: u16) {
    let topic = format!("pair/{n}");
    publ.publish(&topic, b"ping", QoS::AtLeastOnce, false, packet_id)
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let p = sub.expect_publish().await;
    assert_eq!(&*p.topic, topic);
    sub.send(Packet::PubAck(roost_protocol::packet::Ack::new(
        p.packet_id,
    )))
    .await;
}

#[tokio::test]
async fn connection_actor_panic_only_closes_that_connection() {
    let b = Broker::start().await;
    let (mut p1, mut s1) = pair(&b, 1).await;
    let (mut p2, mut s2) = pair(&b, 2).await;
    roundtrip(&mut p1, &mut s1, 1, 1).await;

    let (mut victim, _) = Raw::connect(b.addr, V5, "victim", true).await;
    victim
        .publish(PANIC_CONNECTION_TOPIC, b"boom", QoS::AtMostOnce, false, 0)
        .await;
    victim.expect_closed().await;
    let counters = &b.node().ctx().counters;
    assert!(eventually(|| async { Counters::get(&counters.connection_actor_failures) == 1 }).await);

    // Everyone else keeps publishing and receiving on the same connections.
    for i in 2..20 {
        roundtrip(&mut p1, &mut s1, 1, i).await;
        roundtrip(&mut p2, &mut s2, 2, i).await;
    }
    // And the listener still accepts new clients.
    let (mut p3, mut s3) = pair(&b, 3).await;
    roundtrip(&mut p3, &mut s3, 3, 1).await;
    b.stop().await;
}

#[tokio::test]
async fn session_actor_panic_only_affects_that_client() {
    let b = Broker::start().await;
    let (mut p1, mut s1) = pair(&b, 1).await;
    let (mut victim, _) = Raw::connect(b.addr, V5, "victim", true).await;
    victim
        .subscribe(1, PANIC_SESSION_TOPIC, QoS::AtMostOnce)
        .await;

    p1.publish(PANIC_SESSION_TOPIC, b"boom", QoS::AtMostOnce, false, 0)
        .await;
    // The victim's session died: its connection is closed (it never
    // outlives its session unnoticed).
    victim.expect_closed().await;
    let counters = &b.node().ctx().counters;
    assert!(eventually(|| async { Counters::get(&counters.session_actor_failures) == 1 }).await);

    for i in 1..20 {
        roundtrip(&mut p1, &mut s1, 1, i).await;
    }
    // The victim reconnects and gets a fresh session.
    let (mut again, ack) = Raw::connect(b.addr, V5, "victim", false).await;
    assert_eq!(ack.code, 0);
    again.subscribe(1, "victim/t", QoS::AtMostOnce).await;
    p1.publish("victim/t", b"hi", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&again.expect_publish().await.payload[..], b"hi");
    let _ = Duration::ZERO;
    b.stop().await;
}
