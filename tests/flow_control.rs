//! Publisher flow control (actors/src/inbox.rs): a subscriber that is slower
//! than its publisher but keeps up eventually loses nothing, because the
//! publisher is paused; a subscriber that does not read at all is not waited
//! for, and its bounded queue drops (counted) instead.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{publish, Broker, Raw};
use roost::config::HumanDuration;
use roost_actors::broker::Counters;
use roost_protocol::codec;
use roost_protocol::packet::{Packet, ProtocolVersion, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;
const N: u16 = 2000;

/// All N QoS 1 publishes in one write: the publisher never waits for acks.
fn burst(topic: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for i in 1..=N {
        let p = publish(topic, i.to_be_bytes().to_vec(), QoS::AtLeastOnce, i);
        codec::encode(&Packet::Publish(p), V5, &mut buf).unwrap();
    }
    buf.to_vec()
}

async fn small_queue_broker() -> Broker {
    Broker::start_with(|cfg| {
        cfg.mqtt.max_mqueue_len = 20;
        cfg.mqtt.max_publish_delay = HumanDuration::from_millis(500);
    })
    .await
}

#[tokio::test]
async fn a_slow_but_live_subscriber_loses_no_acknowledged_message() {
    let b = small_queue_broker().await;
    let (mut sub, _) = Raw::connect(b.addr, V5, "slow-sub", true).await;
    sub.subscribe(1, "fc/t", QoS::AtLeastOnce).await;
    let (mut publ, _) = Raw::connect(b.addr, V5, "fast-pub", true).await;
    publ.send_bytes(&burst("fc/t")).await;

    // The subscriber takes its time (a pause every 50 messages) but acks
    // everything; with a queue of 20 it would lose most messages unless the
    // publisher is slowed down.
    for expected in 1..=N {
        let p = sub.expect_publish().await;
        assert_eq!(
            p.payload[..],
            expected.to_be_bytes(),
            "message {expected} out of order or lost"
        );
        sub.puback(p.packet_id).await;
        if expected % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let c = &b.node().ctx().counters;
    assert_eq!(Counters::get(&c.messages_dropped_inbox_full), 0);
    assert!(
        Counters::get(&c.publisher_pauses) > 0,
        "the publisher was paused"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_stall_the_publisher() {
    let b = small_queue_broker().await;
    let (mut stuck, _) = Raw::connect(b.addr, V5, "stuck-sub", true).await;
    stuck.subscribe(1, "fc/s", QoS::AtLeastOnce).await;
    let (mut publ, _) = Raw::connect(b.addr, V5, "pub", true).await;
    publ.send_bytes(&burst("fc/s")).await;
    // Every publish is acknowledged within a few seconds: the stuck
    // subscriber is detected as stalled and not waited for.
    let all_acked = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 1..=N {
            match publ.recv().await {
                Some(Packet::PubAck(_)) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    })
    .await;
    assert!(
        all_acked.is_ok(),
        "publisher stalled by a subscriber that does not read"
    );
    let registry = b.node().ctx().registry().unwrap();
    let sessions = ractor::call!(registry, roost_actors::registry::RegistryMsg::Sessions).unwrap();
    let (_, stuck_session) = sessions
        .iter()
        .find(|(c, _)| c.as_str() == "stuck-sub")
        .unwrap();
    let info = ractor::call!(stuck_session, roost_actors::session::SessionMsg::Info).unwrap();
    assert!(
        info.dropped_queue_full > 0,
        "the stuck session's queue dropped, counted: {info:?}"
    );
    assert!(info.queued <= 20);
    drop(stuck);
    b.stop().await;
}
