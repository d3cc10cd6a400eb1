//! Overload protection with real clients over real TCP: `max_connections`
//! and the memory high watermark refuse new connections with a CONNACK in
//! the client's protocol version (counted, exposed in /metrics), the publish
//! rate limit slows a publisher down without losing anything, and the accept
//! rate limit delays connections past the rate.
//!
//! Timing assertions are lower bounds only: a loaded machine may be slower,
//! never faster than the limit allows.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{connect_packet, eventually, publish, Broker, Raw, WAIT};
use roost::config::{ByteSize, HumanDuration};
use roost_actors::broker::Counters;
use roost_actors::listener::ListenerMsg;
use roost_protocol::codec;
use roost_protocol::packet::{reason, Packet, ProtocolVersion, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;
/// A 3.1.1 CONNACK with return code 3, "server unavailable".
const V311_SERVER_UNAVAILABLE: [u8; 4] = [0x20, 0x02, 0x00, 0x03];

/// `/metrics` as `name{labels}` -> value.
async fn metrics(b: &Broker) -> HashMap<String, f64> {
    let addr = b.node().mgmt_addr().await.expect("mgmt address");
    let get = move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
            .build()
            .into();
        let mut resp = agent
            .get(&format!("http://{addr}/metrics"))
            .call()
            .expect("GET /metrics");
        resp.body_mut().read_to_string().expect("body")
    };
    let text = tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(get))
        .await
        .expect("/metrics in time")
        .expect("HTTP thread");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a number")))
        .collect()
}

async fn metric(b: &Broker, name: &str) -> f64 {
    metrics(b)
        .await
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn live_connections(b: &Broker) -> usize {
    let listener = b
        .node()
        .ctx()
        .listener(roost::node::DEFAULT_LISTENER)
        .expect("listener");
    ractor::call!(listener, ListenerMsg::ConnectionCount).expect("count")
}

/// Sends a 3.1.1 CONNECT and returns every byte the server sends before
/// closing.
async fn v311_refusal_bytes(b: &Broker, client_id: &str) -> Vec<u8> {
    let mut raw = Raw::connect_tcp(b.addr, V311).await;
    raw.send(Packet::Connect(Box::new(connect_packet(
        V311, client_id, true,
    ))))
    .await;
    raw.read_raw_until_closed().await
}

/// A 5.0 CONNECT answered by a CONNACK with `code`, then a close.
async fn expect_v5_refused(b: &Broker, client_id: &str, code: u8) {
    let (mut raw, ack) = Raw::connect(b.addr, V5, client_id, true).await;
    assert_eq!(ack.code, code, "{client_id}: {ack:?}");
    assert!(!ack.session_present);
    let after = raw.expect_closed().await;
    assert!(after.is_empty(), "nothing after the refusal: {after:?}");
}

async fn ping_works(raw: &mut Raw) {
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn over_max_connections_v5_gets_quota_exceeded_and_v311_code_3() {
    let b = Broker::start_with(|cfg| cfg.mqtt.max_connections = 1).await;
    let (mut first, ack) = Raw::connect(b.addr, V5, "first", true).await;
    assert_eq!(ack.code, reason::SUCCESS);

    expect_v5_refused(&b, "second-v5", reason::QUOTA_EXCEEDED).await;
    assert_eq!(
        v311_refusal_bytes(&b, "second-v311").await,
        V311_SERVER_UNAVAILABLE
    );
    // A client that pipelines packets behind its CONNECT still reads its
    // CONNACK (the refusal does not reset the connection under it).
    let mut raw = Raw::connect_tcp(b.addr, V5).await;
    let mut bytes = BytesMut::new();
    let connect = Packet::Connect(Box::new(connect_packet(V5, "pipelined", true)));
    codec::encode(&connect, V5, &mut bytes).unwrap();
    let p = Packet::Publish(publish("t", b"x".to_vec(), QoS::AtMostOnce, 0));
    for _ in 0..100 {
        codec::encode(&p, V5, &mut bytes).unwrap();
    }
    raw.send_bytes(&bytes).await;
    match raw.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, reason::QUOTA_EXCEEDED),
        other => panic!("expected CONNACK, got {other:?}"),
    }

    // Refused without a connection actor; the first client is untouched.
    assert_eq!(live_connections(&b).await, 1);
    ping_works(&mut first).await;
    let c = &b.node().ctx().counters;
    assert_eq!(Counters::get(&c.connections_refused), 3);
    let m = metrics(&b).await;
    assert_eq!(
        m["roost_connections_refused_total{reason=\"max_connections\"}"],
        3.0
    );
    assert_eq!(m["roost_connections_refused_total{reason=\"memory\"}"], 0.0);

    // Room again once the first client leaves.
    first.disconnect().await;
    assert!(eventually(|| async { live_connections(&b).await == 0 }).await);
    let (_again, ack) = Raw::connect(b.addr, V311, "again", true).await;
    assert_eq!(ack.code, reason::SUCCESS);
    b.stop().await;
}

#[tokio::test]
async fn a_refusal_without_a_connect_is_closed_in_bounded_time() {
    let b = Broker::start_with(|cfg| {
        cfg.mqtt.max_connections = 1;
        cfg.mqtt.handshake_timeout = HumanDuration::from_millis(300);
    })
    .await;
    let (_first, _) = Raw::connect(b.addr, V5, "first", true).await;
    // Silent: closed after the (short) handshake timeout, no CONNACK.
    let mut silent = Raw::connect_tcp(b.addr, V5).await;
    assert!(silent.read_raw_until_closed().await.is_empty());
    // Not a CONNECT: closed at once, no CONNACK [MQTT-3.1.4-1].
    let mut garbage = Raw::connect_tcp(b.addr, V5).await;
    garbage.send(Packet::PingReq).await;
    assert!(garbage.read_raw_until_closed().await.is_empty());
    let c = &b.node().ctx().counters;
    assert_eq!(Counters::get(&c.connections_refused), 2);
    b.stop().await;
}

#[tokio::test]
async fn past_64_refusals_at_once_sockets_are_closed_unanswered_and_counted() {
    let b = Broker::start_with(|cfg| {
        cfg.mqtt.max_connections = 1;
        // The longest a refusal waits for a CONNECT (capped at 3 s).
        cfg.mqtt.handshake_timeout = HumanDuration::from_secs(3);
    })
    .await;
    let (_first, _) = Raw::connect(b.addr, V5, "first", true).await;
    // 64 refused clients that never send their CONNECT hold every refusal
    // task for 3 s.
    let mut silent = Vec::new();
    for _ in 0..roost_actors::overload::REFUSALS_IN_FLIGHT {
        silent.push(Raw::connect_tcp(b.addr, V5).await);
    }
    let c = &b.node().ctx().counters;
    let all_taken = eventually(|| async { Counters::get(&c.connections_refused) == 64 }).await;
    assert!(all_taken);
    // The next one is closed at once, without a CONNACK, and counted.
    let mut raw = Raw::connect_tcp(b.addr, V5).await;
    raw.send(Packet::Connect(Box::new(connect_packet(
        V5,
        "one-too-many",
        true,
    ))))
    .await;
    assert!(raw.read_raw_until_closed().await.is_empty());
    assert_eq!(Counters::get(&c.connections_refused), 65);
    // Once the silent ones are closed, refusals are answered again.
    for mut s in silent {
        assert!(s.read_raw_until_closed().await.is_empty());
    }
    expect_v5_refused(&b, "answered-again", reason::QUOTA_EXCEEDED).await;
    assert_eq!(live_connections(&b).await, 1);
    b.stop().await;
}

#[tokio::test]
async fn above_the_memory_watermark_new_connections_are_refused_until_it_clears() {
    let b = Broker::start_with(|cfg| {
        cfg.node.memory_check_interval = HumanDuration::from_millis(50);
    })
    .await;
    let (mut online, _) = Raw::connect(b.addr, V5, "online", true).await;
    assert_eq!(metric(&b, "roost_memory_alarm").await, 0.0);
    assert_eq!(metric(&b, "roost_memory_high_watermark_bytes").await, 0.0);

    // A watermark of one byte: the process is above it.
    let overload = &b.node().ctx().overload;
    overload.set_memory_high_watermark(1);
    assert!(eventually(|| async { overload.memory_alarm() }).await);
    let m = metrics(&b).await;
    assert_eq!(m["roost_memory_alarm"], 1.0);
    assert_eq!(m["roost_memory_high_watermark_bytes"], 1.0);

    expect_v5_refused(&b, "late-v5", reason::SERVER_BUSY).await;
    assert_eq!(
        v311_refusal_bytes(&b, "late-v311").await,
        V311_SERVER_UNAVAILABLE
    );
    // Connected clients are served as before.
    ping_works(&mut online).await;
    let m = metrics(&b).await;
    assert_eq!(m["roost_connections_refused_total{reason=\"memory\"}"], 2.0);
    assert_eq!(
        m["roost_connections_refused_total{reason=\"max_connections\"}"],
        0.0
    );

    // Raised back: the alarm clears and clients are accepted again.
    overload.set_memory_high_watermark(1 << 50);
    assert!(eventually(|| async { !overload.memory_alarm() }).await);
    assert_eq!(metric(&b, "roost_memory_alarm").await, 0.0);
    let (_later, ack) = Raw::connect(b.addr, V5, "later", true).await;
    assert_eq!(ack.code, reason::SUCCESS);
    b.stop().await;
}

#[tokio::test]
async fn a_watermark_from_the_config_is_checked_before_the_first_accept() {
    let b = Broker::start_with(|cfg| {
        cfg.node.memory_high_watermark = ByteSize::bytes(1);
    })
    .await;
    // No waiting: the alarm actor checks before the listener starts.
    expect_v5_refused(&b, "first", reason::SERVER_BUSY).await;
    assert_eq!(metric(&b, "roost_memory_alarm").await, 1.0);
    let c = &b.node().ctx().counters;
    assert_eq!(Counters::get(&c.connections_refused_memory), 1);
    assert_eq!(live_connections(&b).await, 0);
    b.stop().await;
}

/// `n` QoS 1 PUBLISH packets in one buffer, payload = the index.
fn burst(topic: &str, n: u16, payload_len: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for i in 1..=n {
        let mut payload = vec![0u8; payload_len.max(2)];
        payload[..2].copy_from_slice(&i.to_be_bytes());
        let p = publish(topic, payload, QoS::AtLeastOnce, i);
        codec::encode(&Packet::Publish(p), V5, &mut buf).unwrap();
    }
    buf.to_vec()
}

/// Publishes `n` messages in one write and waits for every PUBACK and
/// every delivery, in order. Returns the time it took.
async fn publish_all_and_receive(b: &Broker, n: u16, payload_len: usize) -> Duration {
    let (mut sub, _) = Raw::connect(b.addr, V5, "rl-sub", true).await;
    sub.subscribe(1, "rl/t", QoS::AtMostOnce).await;
    let (mut publ, _) = Raw::connect(b.addr, V5, "rl-pub", true).await;
    let start = Instant::now();
    publ.send_bytes(&burst("rl/t", n, payload_len)).await;
    for i in 1..=n {
        match publ.recv().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, i),
            other => panic!("expected PUBACK {i}, got {other:?}"),
        }
        let p = sub.expect_publish().await;
        assert_eq!(
            p.payload[..2],
            i.to_be_bytes(),
            "message {i} lost or out of order"
        );
    }
    let took = start.elapsed();
    // Slowed down, not disconnected.
    ping_works(&mut publ).await;
    took
}

#[tokio::test]
async fn a_publisher_over_its_message_rate_is_slowed_down_and_loses_nothing() {
    const RATE: u32 = 20;
    const N: u16 = 60;
    let b = Broker::start_with(|cfg| cfg.mqtt.max_publish_rate = RATE).await;
    // The buffer is long past WAIT behind; each recv waits for one message.
    let took = tokio::time::timeout(4 * WAIT, publish_all_and_receive(&b, N, 8))
        .await
        .expect("done in time");
    // One second's worth at once, the other 40 at 20/s: 2 s at least.
    let floor = Duration::from_secs_f64(f64::from(u32::from(N) - RATE) / f64::from(RATE));
    assert!(took >= floor.mul_f64(0.95), "{took:?} < {floor:?}");
    let c = &b.node().ctx().counters;
    assert!(Counters::get(&c.publish_rate_limited) >= u64::from(N) - u64::from(RATE) - 1);
    assert!(metric(&b, "roost_publish_rate_limited_total").await >= 1.0);
    b.stop().await;
}

#[tokio::test]
async fn a_publisher_over_its_byte_rate_is_slowed_down_and_loses_nothing() {
    const RATE: u64 = 4_000;
    const N: u16 = 40;
    const PAYLOAD: usize = 200;
    let b = Broker::start_with(|cfg| {
        cfg.mqtt.max_publish_bytes_rate = ByteSize::bytes(RATE);
    })
    .await;
    let total = burst("rl/t", N, PAYLOAD).len() as u64;
    let one = total / u64::from(N);
    let took = tokio::time::timeout(4 * WAIT, publish_all_and_receive(&b, N, PAYLOAD))
        .await
        .expect("done in time");
    // One second's worth at once; the last packet passes once the rest is
    // paid for.
    let floor = Duration::from_secs_f64((total - RATE - one) as f64 / RATE as f64);
    assert!(
        floor >= Duration::from_secs(1),
        "{floor:?}: test too lenient"
    );
    assert!(took >= floor.mul_f64(0.95), "{took:?} < {floor:?}");
    let c = &b.node().ctx().counters;
    assert!(Counters::get(&c.publish_rate_limited) >= 1);
    b.stop().await;
}

#[tokio::test]
async fn the_accept_rate_limit_delays_the_connection_past_the_rate() {
    let b = Broker::start_with(|cfg| cfg.mqtt.max_connection_rate = 1).await;
    let (_first, ack) = Raw::connect(b.addr, V5, "first", true).await;
    assert_eq!(ack.code, reason::SUCCESS);
    let start = Instant::now();
    let (_second, ack) = Raw::connect(b.addr, V5, "second", true).await;
    let took = start.elapsed();
    assert_eq!(ack.code, reason::SUCCESS, "delayed, not refused");
    // One connection per second: the second waits for the next token.
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert_eq!(
        metric(&b, "roost_connections_rate_limited_total").await,
        1.0
    );
    b.stop().await;
}
