//! CONNECT over real TCP: both protocol versions on one listener, refused
//! protocol levels and client ids, keep alive, the handshake timeout,
//! protocol errors around CONNECT, and what CONNACK tells a 5.0 client.

mod common;

use std::time::{Duration, Instant};

use common::{connect_packet, will, Broker, Raw, QUIET};
use roost::config::{ByteSize, HumanDuration};
use roost_protocol::packet::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// 3.1.1 CONNACK "refused: unacceptable protocol version". [MQTT-3.2.2.3]
const CONNACK_V311_BAD_PROTOCOL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];
/// 3.1.1 CONNACK "refused: identifier rejected". [MQTT-3.2.2.3]
const CONNACK_V311_BAD_CLIENT_ID: [u8; 4] = [0x20, 0x02, 0x00, 0x02];

/// A hand-built CONNECT with any protocol name and level (5.0 layout, with
/// an empty property list, when `props` is set).
fn raw_connect(name: &str, level: u8, props: bool) -> Vec<u8> {
    raw_connect_props(name, level, props.then_some(&[][..]))
}

/// A hand-built CONNECT; `props`, when given, is the 5.0 property list.
fn raw_connect_props(name: &str, level: u8, props: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.push(level);
    body.push(0x02); // clean session
    body.extend_from_slice(&60u16.to_be_bytes());
    if let Some(props) = props {
        body.push(props.len() as u8);
        body.extend_from_slice(props);
    }
    body.extend_from_slice(&[0x00, 0x01, b'c']);
    let mut out = vec![0x10, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

async fn subscribed(b: &Broker, id: &str, filter: &str) -> Raw {
    let (mut s, _) = Raw::connect(b.addr, V5, id, true).await;
    s.subscribe(1, filter, QoS::AtLeastOnce).await;
    s
}

#[tokio::test]
async fn v311_and_v5_clients_share_one_listener_and_exchange_messages() {
    let b = Broker::start().await;
    let (mut s4, a4) = Raw::connect(b.addr, V311, "mix-s4", true).await;
    let (mut s5, a5) = Raw::connect(b.addr, V5, "mix-s5", true).await;
    assert_eq!((a4.code, a5.code), (0, 0));
    assert_eq!(
        s4.subscribe(1, "mix/#", QoS::AtLeastOnce)
            .await
            .reason_codes,
        [1]
    );
    assert_eq!(
        s5.subscribe(1, "mix/#", QoS::AtLeastOnce)
            .await
            .reason_codes,
        [1]
    );
    let (mut p4, _) = Raw::connect(b.addr, V311, "mix-p4", true).await;
    let (mut p5, _) = Raw::connect(b.addr, V5, "mix-p5", true).await;
    p4.publish_qos1("mix/from4", &b"four"[..], 1).await;
    p5.publish_qos1("mix/from5", &b"five"[..], 1).await;
    for s in [&mut s4, &mut s5] {
        let m = s.expect_publish().await;
        assert_eq!((&*m.topic, &m.payload[..]), ("mix/from4", &b"four"[..]));
        s.puback(m.packet_id).await;
        let m = s.expect_publish().await;
        assert_eq!((&*m.topic, &m.payload[..]), ("mix/from5", &b"five"[..]));
        s.puback(m.packet_id).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn mqtt31_protocol_level_3_gets_return_code_1_and_is_closed() {
    let b = Broker::start().await;
    let mut c = Raw::connect_tcp(b.addr, V311).await;
    c.send_bytes(&raw_connect("MQIsdp", 3, false)).await;
    // [MQTT-3.1.2-2] CONNACK 0x01 (unacceptable protocol level), then close.
    assert_eq!(c.read_raw_until_closed().await, CONNACK_V311_BAD_PROTOCOL);
    b.stop().await;
}

#[tokio::test]
async fn unknown_protocol_level_6_gets_unsupported_protocol_version_and_is_closed() {
    let b = Broker::start().await;
    let mut c = Raw::connect_tcp(b.addr, V311).await;
    c.send_bytes(&raw_connect("MQTT", 6, true)).await;
    // The level is unknown, so the client's CONNACK format is too: the
    // broker answers in the 3.1.1 layout (return code 1 = 0x84).
    assert_eq!(c.read_raw_until_closed().await, CONNACK_V311_BAD_PROTOCOL);
    b.stop().await;
}

#[tokio::test]
async fn v5_empty_client_id_gets_an_assigned_client_identifier() {
    let b = Broker::start().await;
    let (mut c, ack) = Raw::connect(b.addr, V5, "", true).await;
    assert_eq!(ack.code, reason::SUCCESS);
    let assigned = ack
        .properties
        .assigned_client_identifier
        .expect("Assigned Client Identifier [MQTT-3.2.2-16]");
    assert!(!assigned.is_empty());
    // The connection works under that id.
    c.subscribe(1, "anon/t", QoS::AtMostOnce).await;
    c.publish("anon/t", b"x", QoS::AtMostOnce, false, 0).await;
    assert_eq!(&c.expect_publish().await.payload[..], b"x");
    // Two anonymous clients get different ids.
    let (_c2, ack2) = Raw::connect(b.addr, V5, "", true).await;
    assert_ne!(ack2.properties.assigned_client_identifier, Some(assigned));
    b.stop().await;
}

#[tokio::test]
async fn v311_empty_client_id_with_clean_session_is_accepted() {
    let b = Broker::start().await;
    let (mut c, ack) = Raw::connect(b.addr, V311, "", true).await;
    assert_eq!(ack.code, 0);
    assert!(!ack.session_present);
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    b.stop().await;
}

#[tokio::test]
async fn v311_empty_client_id_without_clean_session_is_refused_with_code_2() {
    let b = Broker::start().await;
    let mut c = Raw::connect_tcp(b.addr, V311).await;
    c.send(Packet::Connect(Box::new(connect_packet(V311, "", false))))
        .await;
    // [MQTT-3.1.3-8] CONNACK 0x02, then close.
    assert_eq!(c.read_raw_until_closed().await, CONNACK_V311_BAD_CLIENT_ID);
    b.stop().await;
}

#[tokio::test]
async fn client_id_longer_than_max_client_id_len_is_refused() {
    let b = Broker::start_with(|cfg| cfg.mqtt.max_client_id_len = 23).await;
    let longest = "x".repeat(23);
    let too_long = "y".repeat(24);

    let (_ok, ack) = Raw::connect(b.addr, V5, &longest, true).await;
    assert_eq!(ack.code, reason::SUCCESS);

    let (mut c5, ack) = Raw::connect(b.addr, V5, &too_long, true).await;
    assert_eq!(ack.code, reason::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(!ack.session_present);
    assert_eq!(c5.expect_closed().await, []);

    let mut c4 = Raw::connect_tcp(b.addr, V311).await;
    c4.send(Packet::Connect(Box::new(connect_packet(
        V311, &too_long, true,
    ))))
    .await;
    assert_eq!(c4.read_raw_until_closed().await, CONNACK_V311_BAD_CLIENT_ID);
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_0_is_accepted_and_never_times_out() {
    let b = Broker::start().await;
    let mut c = connect_packet(V5, "ka0", true);
    c.keep_alive = 0;
    let (mut c, ack) = Raw::connect_with(b.addr, c).await;
    assert_eq!(ack.code, reason::SUCCESS);
    assert_eq!(ack.properties.server_keep_alive, None);
    // Silent for longer than any keep alive of 1s would allow.
    c.expect_nothing(Duration::from_millis(1_700)).await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    b.stop().await;
}

#[tokio::test]
async fn any_packet_resets_the_keep_alive_timer() {
    let b = Broker::start().await;
    let mut c = connect_packet(V5, "ka-ping", true);
    c.keep_alive = 1;
    let (mut c, _) = Raw::connect_with(b.addr, c).await;
    let start = Instant::now();
    // 2.5s in all, far past 1.5s, but never 1.5s of silence.
    while start.elapsed() < Duration::from_millis(2_500) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp));
    }
    b.stop().await;
}

/// Connects with keep alive 1s and a will, stays silent, and returns the
/// packets received before the close and how long the close took.
async fn silent_client_with_will(
    b: &Broker,
    version: ProtocolVersion,
    id: &str,
) -> (Vec<Packet>, Duration) {
    let mut c = connect_packet(version, id, true);
    c.keep_alive = 1;
    c.will = Some(will(
        &format!("will/{id}"),
        b"gone",
        QoS::AtLeastOnce,
        false,
    ));
    let start = Instant::now();
    let (mut c, ack) = Raw::connect_with(b.addr, c).await;
    assert_eq!(ack.code, reason::SUCCESS);
    let got = c.expect_closed().await;
    (got, start.elapsed())
}

#[tokio::test]
async fn v5_keep_alive_timeout_sends_disconnect_0x8d_after_1_5x_and_publishes_the_will() {
    let b = Broker::start().await;
    let mut watcher = subscribed(&b, "ka-watch5", "will/#").await;
    let (got, took) = silent_client_with_will(&b, V5, "ka5").await;
    assert_eq!(
        got,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::KEEP_ALIVE_TIMEOUT
        ))]
    );
    // [MQTT-3.1.2-24] one and a half times the keep alive, not before.
    assert!(
        took >= Duration::from_millis(1_500),
        "closed after {took:?}"
    );
    assert!(took < Duration::from_millis(2_600), "closed after {took:?}");
    let w = watcher.expect_publish().await;
    assert_eq!((&*w.topic, &w.payload[..]), ("will/ka5", &b"gone"[..]));
    b.stop().await;
}

#[tokio::test]
async fn v311_keep_alive_timeout_closes_after_1_5x_and_publishes_the_will() {
    let b = Broker::start().await;
    let mut watcher = subscribed(&b, "ka-watch4", "will/#").await;
    let (got, took) = silent_client_with_will(&b, V311, "ka4").await;
    assert_eq!(got, []);
    assert!(
        took >= Duration::from_millis(1_500),
        "closed after {took:?}"
    );
    assert!(took < Duration::from_millis(2_600), "closed after {took:?}");
    let w = watcher.expect_publish().await;
    assert_eq!(&*w.topic, "will/ka4");
    b.stop().await;
}

#[tokio::test]
async fn handshake_timeout_closes_a_socket_that_never_sends_connect() {
    let timeout = Duration::from_millis(300);
    let b = Broker::start_with(|cfg| {
        cfg.mqtt.handshake_timeout = HumanDuration::from_millis(300);
    })
    .await;
    let start = Instant::now();
    let mut silent = Raw::connect_tcp(b.addr, V5).await;
    // Half a CONNECT is no better than none.
    let mut partial = Raw::connect_tcp(b.addr, V5).await;
    partial.send_bytes(&raw_connect("MQTT", 5, true)[..5]).await;
    assert_eq!(silent.read_raw_until_closed().await, [0u8; 0]);
    assert_eq!(partial.read_raw_until_closed().await, [0u8; 0]);
    let took = start.elapsed();
    assert!(took >= timeout, "closed after {took:?}");
    assert!(took < timeout * 5, "closed after {took:?}");
    b.stop().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error_that_closes_the_connection() {
    let b = Broker::start().await;
    let (mut c5, _) = Raw::connect(b.addr, V5, "twice5", true).await;
    c5.send(Packet::Connect(Box::new(connect_packet(
        V5, "twice5", true,
    ))))
    .await;
    // [MQTT-3.1.0-2]
    assert_eq!(
        c5.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::PROTOCOL_ERROR
        ))]
    );
    let (mut c4, _) = Raw::connect(b.addr, V311, "twice4", true).await;
    c4.send(Packet::Connect(Box::new(connect_packet(
        V311, "twice4", true,
    ))))
    .await;
    assert_eq!(c4.expect_closed().await, []);
    b.stop().await;
}

#[tokio::test]
async fn a_packet_before_connect_closes_the_connection_without_connack() {
    let b = Broker::start().await;
    // PINGREQ, a 3.1.1 SUBSCRIBE and a QoS 0 PUBLISH, each as a first packet.
    let firsts: [&[u8]; 3] = [
        &[0xC0, 0x00],
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00],
        &[0x30, 0x04, 0x00, 0x01, b't', b'x'],
    ];
    for bytes in firsts {
        let mut c = Raw::connect_tcp(b.addr, V311).await;
        c.send_bytes(bytes).await;
        // [MQTT-3.1.0-1] only CONNECT may come first; CONNACK answers a
        // CONNECT only.
        assert_eq!(
            c.read_raw_until_closed().await,
            [0u8; 0],
            "first packet {bytes:02x?}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn malformed_v311_connect_closes_without_connack() {
    let b = Broker::start().await;
    let mut bytes = raw_connect("MQTT", 4, false);
    bytes[9] |= 0x01; // the reserved connect flag [MQTT-3.1.2-3]
    let mut c = Raw::connect_tcp(b.addr, V311).await;
    c.send_bytes(&bytes).await;
    // [MQTT-3.1.4-1] (3.1.1): close without sending a CONNACK.
    assert_eq!(c.read_raw_until_closed().await, [0u8; 0]);
    b.stop().await;
}

#[tokio::test]
async fn v5_connack_announces_receive_maximum_topic_alias_maximum_and_maximum_packet_size() {
    let b = Broker::start_with(|cfg| {
        cfg.mqtt.max_inflight = 10;
        cfg.mqtt.max_topic_alias = 5;
        cfg.mqtt.max_packet_size = ByteSize::bytes(4_096);
        cfg.mqtt.max_session_expiry = HumanDuration::from_secs(60);
    })
    .await;
    let mut c = connect_packet(V5, "props", false);
    c.properties.session_expiry_interval = Some(3_600);
    let (_c, ack) = Raw::connect_with(b.addr, c).await;
    assert_eq!(ack.code, reason::SUCCESS);
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.maximum_packet_size, Some(4_096));
    // The expiry we granted, since it is less than asked. [MQTT-3.2.2.3.2]
    assert_eq!(p.session_expiry_interval, Some(60));
    // Features that are on by default are not announced (absent = available).
    assert_eq!(p.retain_available, None);
    assert_eq!(p.maximum_qos, None);
    assert_eq!(p.assigned_client_identifier, None);

    // 3.1.1 CONNACK has no properties at all: two bytes of variable header.
    let mut c4 = Raw::connect_tcp(b.addr, V311).await;
    c4.send(Packet::Connect(Box::new(connect_packet(
        V311, "props4", true,
    ))))
    .await;
    let ack = c4.recv().await;
    assert_eq!(
        ack,
        Some(Packet::ConnAck(ConnAck::default())),
        "3.1.1 CONNACK, accepted"
    );
    c4.expect_nothing(QUIET).await;
    b.stop().await;
}

#[tokio::test]
async fn v5_connect_with_receive_maximum_0_is_refused_as_protocol_error() {
    let b = Broker::start().await;
    let mut raw = Raw::connect_tcp(b.addr, V5).await;
    // Receive Maximum (0x21) = 0, hand-built: our encoder refuses to write it.
    raw.send_bytes(&raw_connect_props("MQTT", 5, Some(&[0x21, 0x00, 0x00])))
        .await;
    let got = raw.expect_closed().await;
    // Receive Maximum 0 is a Protocol Error [MQTT-3.1.2.11.3]; the CONNACK
    // with 0x82 is optional, the close is not.
    assert!(
        got.is_empty()
            || got
                == [Packet::ConnAck(ConnAck {
                    code: reason::PROTOCOL_ERROR,
                    ..ConnAck::default()
                })],
        "got {got:?}"
    );
    b.stop().await;
}
