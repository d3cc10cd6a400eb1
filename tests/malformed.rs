//! Malformed and forbidden packets as raw bytes over real TCP. Each closes
//! only the connection that sent it (a 5.0 client first gets DISCONNECT with
//! 0x81 Malformed Packet or 0x82 Protocol Error [MQTT-4.13.1]) and publishes
//! its will, while a bystander client keeps working. Valid short forms of
//! DISCONNECT are accepted, and a fixed-seed stream of random packets never
//! takes the broker down.

mod common;

use common::{connect_packet, will, Broker, Raw, QUIET};
use roost_actors::broker::Counters;
use roost_protocol::packet::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// A publisher and a subscriber that must keep working throughout. The
/// subscriber also watches the victims' wills.
struct Bystander {
    publisher: Raw,
    subscriber: Raw,
    next_id: u16,
}

impl Bystander {
    async fn new(b: &Broker) -> Bystander {
        let (mut subscriber, _) = Raw::connect(b.addr, V5, "bystander-sub", true).await;
        subscriber.subscribe(1, "pair/t", QoS::AtLeastOnce).await;
        subscriber.subscribe(2, "victim/#", QoS::AtLeastOnce).await;
        let (publisher, _) = Raw::connect(b.addr, V5, "bystander-pub", true).await;
        Bystander {
            publisher,
            subscriber,
            next_id: 1,
        }
    }

    /// One QoS 1 round trip; it must be the next thing the subscriber gets.
    async fn round_trip(&mut self) {
        self.next_id += 1;
        let payload = format!("ping-{}", self.next_id);
        self.publisher
            .publish_qos1("pair/t", payload.clone(), self.next_id)
            .await;
        let m = self.subscriber.expect_publish().await;
        assert_eq!((&*m.topic, &m.payload[..]), ("pair/t", payload.as_bytes()));
        self.subscriber.puback(m.packet_id).await;
    }

    /// The next message must be the will of `victim`.
    async fn expect_will(&mut self, victim: &str) {
        let m = self.subscriber.expect_publish().await;
        assert_eq!(m.topic, format!("victim/{victim}"));
        self.subscriber.puback(m.packet_id).await;
    }
}

async fn victim(b: &Broker, version: ProtocolVersion, name: &str) -> Raw {
    let mut c = connect_packet(version, name, true);
    c.will = Some(will(
        &format!("victim/{name}"),
        b"w",
        QoS::AtLeastOnce,
        false,
    ));
    let (raw, ack) = Raw::connect_with(b.addr, c).await;
    assert_eq!(ack.code, reason::SUCCESS);
    raw
}

/// A frame with a correct remaining length around `body`.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// The bad packets, as (name, 5.0 bytes, 3.1.1 bytes, 5.0 reason code).
fn bad_packets() -> Vec<(&'static str, Vec<u8>, Vec<u8>, u8)> {
    let malformed = reason::MALFORMED_PACKET;
    let protocol = reason::PROTOCOL_ERROR;
    // [MQTT-2.1.3-1] PUBREL must have flags 0010.
    let pubrel_flags = frame(0x60, &[0x00, 0x01]);
    // [MQTT-2.1.3-1] PINGREQ must have flags 0000.
    let pingreq_flags = frame(0xC1, &[]);
    // [MQTT-1.5.5] a fifth remaining length byte.
    let long_length = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    // [MQTT-3.3.1-4] QoS 3.
    let qos3_v5 = frame(0x36, &[0x00, 0x01, b't', 0x00, 0x01, 0x00, b'x']);
    let qos3_v4 = frame(0x36, &[0x00, 0x01, b't', 0x00, 0x01, b'x']);
    // [MQTT-2.2.1-3] a QoS 1 PUBLISH with packet identifier 0.
    let id0_v5 = frame(0x32, &[0x00, 0x01, b't', 0x00, 0x00, 0x00, b'x']);
    let id0_v4 = frame(0x32, &[0x00, 0x01, b't', 0x00, 0x00, b'x']);
    // [MQTT-1.5.4-1] a topic that is not UTF-8 (0xC3 0x28).
    let utf8_v5 = frame(0x30, &[0x00, 0x02, 0xC3, 0x28, 0x00, b'x']);
    let utf8_v4 = frame(0x30, &[0x00, 0x02, 0xC3, 0x28, b'x']);
    // [MQTT-3.8.3-2] SUBSCRIBE without a topic filter.
    let nosub_v5 = frame(0x82, &[0x00, 0x01, 0x00]);
    let nosub_v4 = frame(0x82, &[0x00, 0x01]);
    vec![
        (
            "pubrel-flags",
            pubrel_flags.clone(),
            pubrel_flags,
            malformed,
        ),
        (
            "pingreq-flags",
            pingreq_flags.clone(),
            pingreq_flags,
            malformed,
        ),
        (
            "length-5-bytes",
            long_length.clone(),
            long_length,
            malformed,
        ),
        ("qos-3", qos3_v5, qos3_v4, malformed),
        ("packet-id-0", id0_v5, id0_v4, protocol),
        ("topic-not-utf8", utf8_v5, utf8_v4, malformed),
        ("subscribe-no-filter", nosub_v5, nosub_v4, protocol),
    ]
}

#[tokio::test]
async fn each_malformed_packet_closes_only_its_own_connection() {
    let b = Broker::start().await;
    let mut by = Bystander::new(&b).await;
    by.round_trip().await;
    for (name, v5_bytes, v4_bytes, code) in bad_packets() {
        let mut c = victim(&b, V5, &format!("{name}-5")).await;
        c.send_bytes(&v5_bytes).await;
        assert_eq!(
            c.expect_closed().await,
            [Packet::Disconnect(Disconnect::with_reason(code))],
            "{name} (5.0)"
        );
        by.expect_will(&format!("{name}-5")).await;
        by.round_trip().await;

        let mut c = victim(&b, V311, &format!("{name}-4")).await;
        c.send_bytes(&v4_bytes).await;
        assert_eq!(c.expect_closed().await, [], "{name} (3.1.1)");
        by.expect_will(&format!("{name}-4")).await;
        by.round_trip().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn v5_disconnect_with_remaining_length_0_or_only_a_reason_code_is_a_normal_disconnect() {
    let b = Broker::start().await;
    let mut by = Bystander::new(&b).await;
    // [MQTT-3.14.2.1] no reason code means 0x00; a lone reason code has no
    // properties.
    for (name, bytes) in [
        ("short", vec![0xE0, 0x00]),
        ("code-only", vec![0xE0, 0x01, 0x00]),
    ] {
        let mut c = victim(&b, V5, name).await;
        c.send_bytes(&bytes).await;
        assert_eq!(c.expect_closed().await, [], "{name}");
        // No will: the next message is the round trip. [MQTT-3.1.2-10]
        by.round_trip().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn auth_without_enhanced_authentication_is_a_protocol_error() {
    let b = Broker::start().await;
    let mut by = Bystander::new(&b).await;
    let mut c = victim(&b, V5, "auth5").await;
    c.send_bytes(&[0xF0, 0x00]).await;
    // [MQTT-4.12.0-1]
    assert_eq!(
        c.expect_closed().await,
        [Packet::Disconnect(Disconnect::with_reason(
            reason::PROTOCOL_ERROR
        ))]
    );
    by.expect_will("auth5").await;
    // Packet type 15 is reserved in 3.1.1. [MQTT-2.2.1] (3.1.1)
    let mut c = victim(&b, V311, "auth4").await;
    c.send_bytes(&[0xF0, 0x00]).await;
    assert_eq!(c.expect_closed().await, []);
    by.expect_will("auth4").await;
    by.round_trip().await;
    b.stop().await;
}

/// xorshift64*: a fixed-seed generator, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A short string that is mostly topic-like, sometimes not UTF-8.
    fn string(&mut self) -> Vec<u8> {
        const CHARS: &[u8] = b"ab/+#$\0\xC3";
        let n = self.below(8) as usize;
        let s: Vec<u8> = (0..n)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
            .collect();
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend(s);
        out
    }
}

/// One random packet: sometimes raw noise, mostly a frame with a correct
/// length and a plausible type, flags and body, so the decoder is reached.
fn random_packet(rng: &mut Rng) -> Vec<u8> {
    if rng.below(5) == 0 {
        let n = 1 + rng.below(16) as usize;
        return rng.bytes(n);
    }
    let kind = 1 + rng.below(15) as u8;
    let flags = match (kind, rng.below(8)) {
        (_, 0) => rng.below(16) as u8,
        (3, _) => rng.below(16) as u8 & 0b1011 | (rng.below(3) as u8) << 1,
        (6 | 8 | 10, _) => 0b0010,
        _ => 0,
    };
    let mut body = Vec::new();
    match kind {
        3 | 8 | 10 => {
            if kind != 3 || flags & 0b0110 != 0 {
                body.extend((1 + rng.below(4) as u16).to_be_bytes());
            }
            let props = rng.below(3) as usize;
            body.push(props as u8);
            body.extend(rng.bytes(props));
            for _ in 0..=rng.below(3) {
                body.extend(rng.string());
                body.push(rng.below(64) as u8);
            }
        }
        _ => {
            let n = rng.below(12) as usize;
            body.extend(rng.bytes(n));
        }
    }
    frame(kind << 4 | flags, &body)
}

#[tokio::test]
async fn random_packets_after_connect_never_take_the_broker_down() {
    let b = Broker::start().await;
    let mut by = Bystander::new(&b).await;
    let mut rng = Rng(0x5EED_2024_0BAD_F00D);
    let mut sent = 0;
    let mut conn = 0;
    while sent < 200 {
        let version = if rng.below(2) == 0 { V5 } else { V311 };
        let (mut c, _) = Raw::connect(b.addr, version, &format!("fuzz-{conn}"), true).await;
        let mut bytes = Vec::new();
        for _ in 0..=rng.below(8) {
            bytes.extend(random_packet(&mut rng));
            sent += 1;
        }
        c.send_bytes(&bytes).await;
        // Whatever comes back (acks, DISCONNECT, a close): read until the
        // close or a short silence.
        while c
            .recv_within(std::time::Duration::from_millis(50))
            .await
            .is_some()
        {}
        conn += 1;
    }
    let counters = &b.node().ctx().counters;
    assert!(
        Counters::get(&counters.malformed_packets) > 0,
        "the decoder was reached"
    );
    assert_eq!(Counters::get(&counters.connection_actor_failures), 0);
    assert_eq!(Counters::get(&counters.session_actor_failures), 0);
    // The bystanders never noticed; a new client works too.
    by.round_trip().await;
    let (mut fresh, ack) = Raw::connect(b.addr, V5, "after-fuzz", true).await;
    assert_eq!(ack.code, reason::SUCCESS);
    fresh.subscribe(1, "after/t", QoS::AtMostOnce).await;
    fresh
        .publish("after/t", b"ok", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&fresh.expect_publish().await.payload[..], b"ok");
    fresh.expect_nothing(QUIET).await;
    b.stop().await;
}
