//! Fixed header, CONNECT, strings and PUBLISH edge cases, with hand-written
//! byte vectors.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::codec::{encode_publish, EncodeError};
use crate::packet::{Connect, ConnectProperties, LastWill, Publish, QoS};

/// CONNECT body up to keep alive (60 s), then `tail`.
fn connect_body(level: u8, flags: u8, tail: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
    body.extend_from_slice(tail);
    body
}

#[test]
fn incomplete_input_returns_none_and_leaves_buffer_untouched() {
    for bytes in [
        &[][..],
        &[0x30],
        &[0x30, 0x05, b'x'],
        &[0x30, 0xFF, 0xFF, 0xFF],
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, V311, u32::MAX), Ok(None));
        assert_eq!(&buf[..], bytes);
    }
}

#[test]
fn two_packets_in_one_buffer_decode_one_at_a_time() {
    let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00, 0xC0][..]);
    assert_eq!(decode(&mut buf, V5, 100), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, V5, 100), Ok(Some(Packet::PingResp)));
    assert_eq!(decode(&mut buf, V5, 100), Ok(None));
    assert_eq!(&buf[..], &[0xC0]);
}

#[test]
fn remaining_length_longer_than_four_bytes_is_malformed() {
    assert!(malformed(dec(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V311)));
    assert!(malformed(dec(&[0x30, 0x80, 0x80, 0x80, 0x80], V5)));
}

#[test]
fn remaining_length_not_minimally_encoded_is_malformed() {
    assert!(malformed(dec(&[0xC0, 0x80, 0x00], V311)));
}

#[test]
fn packet_too_large_is_rejected_from_the_fixed_header_alone() {
    // Remaining length 1000: 0xE8 0x07. Only the header has arrived.
    let err = dec(&[0x30, 0xE8, 0x07], V311);
    assert_eq!(err, Ok(None));
    let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
    let err = decode(&mut buf, V311, 100);
    assert_eq!(
        err,
        Err(DecodeError::PacketTooLarge {
            size: 1003,
            max: 100
        })
    );
    assert_eq!(err.unwrap_err().reason_code(), 0x95);
}

#[test]
fn packet_exactly_at_the_size_limit_is_accepted() {
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(decode(&mut buf, V5, 2), Ok(Some(Packet::PingReq)));
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert!(matches!(
        decode(&mut buf, V5, 1),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

#[test]
fn packet_type_0_is_malformed() {
    assert!(malformed(dec(&[0x00, 0x00], V311)));
    assert!(malformed(dec(&[0x00, 0x00], V5)));
}

#[test]
fn packet_type_15_is_malformed_in_311_and_auth_in_5() {
    assert!(malformed(dec(&[0xF0, 0x00], V311)));
    assert_eq!(dec_one(&[0xF0, 0x00], V5), Packet::Auth(Default::default()));
}

#[test]
fn reserved_flags_must_match_exactly() {
    // PUBREL, SUBSCRIBE, UNSUBSCRIBE need 0010. [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
    assert!(malformed(dec(&[0x60, 0x02, 0x00, 0x01], V311)));
    assert!(malformed(dec(&[0x64, 0x02, 0x00, 0x01], V5)));
    assert!(matches!(
        dec(&[0x62, 0x02, 0x00, 0x01], V311),
        Ok(Some(Packet::PubRel(_)))
    ));
    assert!(malformed(dec(&frame(0x80, &[0, 1, 0, 1, b'a', 0]), V311)));
    assert!(malformed(dec(&frame(0xA0, &[0, 1, 0, 1, b'a']), V311)));
    // Everything else needs 0000. [MQTT-2.1.3-1]
    for first in [0x41, 0x52, 0x78, 0x91, 0xB4, 0xC1, 0xD2, 0xE8, 0x21] {
        assert!(malformed(dec(&[first, 0x00], V5)), "{first:#x}");
    }
    assert!(malformed(dec(&[0xF1, 0x00], V5)));
}

#[test]
fn publish_qos_3_and_qos_0_with_dup_are_malformed() {
    let body = [0, 1, b't', 0, 1];
    assert!(malformed(dec(&frame(0x36, &body), V311))); // [MQTT-3.3.1-4]
    assert!(malformed(dec(&frame(0x38, &body[..3]), V311))); // [MQTT-3.3.1-2]
    assert!(dec(&frame(0x3A, &body), V311).is_ok()); // DUP with QoS 1 is fine
}

#[test]
fn only_connect_is_accepted_before_connect() {
    assert!(protocol(dec(&[0xC0, 0x00], None)));
    assert!(protocol(dec(&frame(0x30, &[0, 1, b't']), None)));
    assert!(protocol(dec(&[0xF0, 0x00], None)));
    let connect = frame(0x10, &connect_body(4, 0x02, &[0, 1, b'c']));
    assert!(matches!(dec_one(&connect, None), Packet::Connect(_)));
}

#[test]
fn connect_311_minimal_decodes() {
    let packet = dec_one(&frame(0x10, &connect_body(4, 0x02, &[0, 1, b'c'])), None);
    let expected = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    assert_eq!(packet, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_level_must_be_4_or_5_and_name_mqtt() {
    let unsupported = |level| Err(DecodeError::UnsupportedProtocolVersion(level));
    let body = connect_body(3, 0x02, &[0, 1, b'c']);
    assert_eq!(dec(&frame(0x10, &body), None), unsupported(3));
    let body = connect_body(6, 0x02, &[0, 1, b'c']);
    assert_eq!(dec(&frame(0x10, &body), None), unsupported(6));
    let mut mqisdp = vec![0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60];
    mqisdp.extend_from_slice(&[0, 1, b'c']);
    assert_eq!(dec(&frame(0x10, &mqisdp), None), unsupported(3));
    let mut body = connect_body(4, 0x02, &[0, 1, b'c']);
    body[5] = b'X';
    assert!(protocol(dec(&frame(0x10, &body), None)));
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(3).reason_code(),
        0x84
    );
}

#[test]
fn connect_reserved_flag_is_malformed() {
    let body = connect_body(4, 0x03, &[0, 1, b'c']); // [MQTT-3.1.2-3]
    assert!(malformed(dec(&frame(0x10, &body), None)));
}

#[test]
fn connect_will_flags_must_be_consistent() {
    let client = [0, 1, b'c'];
    // Will QoS 1 and will retain without the will flag. [MQTT-3.1.2-11] [MQTT-3.1.2-13]
    assert!(malformed(dec(
        &frame(0x10, &connect_body(4, 0x0A, &client)),
        None
    )));
    assert!(malformed(dec(
        &frame(0x10, &connect_body(4, 0x22, &client)),
        None
    )));
    // Will QoS 3. [MQTT-3.1.2-12]
    let will = [0, 1, b'c', 0, 1, b'w', 0, 1, b'x'];
    assert!(malformed(dec(
        &frame(0x10, &connect_body(4, 0x1E, &will)),
        None
    )));
    // Will flag, QoS 2, retain: valid.
    let Packet::Connect(c) = dec_one(&frame(0x10, &connect_body(4, 0x36, &will)), None) else {
        panic!("not a CONNECT");
    };
    let will = c.will.expect("will");
    assert_eq!(
        (will.qos, will.retain, &*will.topic),
        (QoS::ExactlyOnce, true, "w")
    );
    assert_eq!(will.payload, Bytes::from_static(b"x"));
}

#[test]
fn password_without_user_name_is_malformed_in_311_only() {
    let tail = [0, 1, b'c', 0, 2, b'p', b'w'];
    assert!(malformed(dec(
        &frame(0x10, &connect_body(4, 0x42, &tail)),
        None
    )));
    let v5_tail = [0, 0, 1, b'c', 0, 2, b'p', b'w']; // property length 0 first
    let Packet::Connect(c) = dec_one(&frame(0x10, &connect_body(5, 0x42, &v5_tail)), None) else {
        panic!("not a CONNECT");
    };
    assert_eq!(
        (c.username, c.password),
        (None, Some(Bytes::from_static(b"pw")))
    );
}

#[test]
fn connect_v5_properties_duplicates_unknown_and_misplaced() {
    let with_props = |props: &[u8]| {
        let mut tail = vec![u8::try_from(props.len()).expect("short")];
        tail.extend_from_slice(props);
        tail.extend_from_slice(&[0, 1, b'c']);
        frame(0x10, &connect_body(5, 0x02, &tail))
    };
    let Packet::Connect(c) = dec_one(&with_props(&[0x11, 0, 0, 0, 10, 0x21, 0, 5]), None) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.properties.session_expiry_interval, Some(10));
    assert_eq!(c.properties.receive_maximum, Some(5));
    // Session expiry twice: protocol error.
    assert!(protocol(dec(
        &with_props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
        None
    )));
    // Unknown identifier 0x7F: malformed. Topic alias (PUBLISH only): protocol error.
    assert!(malformed(dec(&with_props(&[0x7F, 0]), None)));
    assert!(protocol(dec(&with_props(&[0x23, 0, 1]), None)));
    // Receive maximum 0 and request problem information 2.
    assert!(protocol(dec(&with_props(&[0x21, 0, 0]), None)));
    assert!(protocol(dec(&with_props(&[0x17, 2]), None)));
    // Property length running past the end of the packet.
    assert!(malformed(dec(
        &frame(0x10, &connect_body(5, 0x02, &[9, 0x11])),
        None
    )));
}

#[test]
fn strings_must_be_utf8_without_nul() {
    // [MQTT-1.5.4-1]: 0xC3 0x28 is invalid UTF-8; an encoded surrogate too.
    assert!(malformed(dec(&frame(0x30, &[0, 2, 0xC3, 0x28]), V311)));
    assert!(malformed(dec(
        &frame(0x30, &[0, 3, 0xED, 0xA0, 0x80]),
        V311
    )));
    // [MQTT-1.5.4-2]: U+0000.
    assert!(malformed(dec(&frame(0x30, &[0, 3, b'a', 0, b'b']), V311)));
    let topic_too_long = [0, 9, b'a'];
    assert!(malformed(dec(&frame(0x30, &topic_too_long), V311)));
    let p = dec_one(&frame(0x30, &[0, 2, 0xC3, 0xA9, b'!']), V311);
    let Packet::Publish(p) = p else {
        panic!("not a PUBLISH")
    };
    assert_eq!((&*p.topic, &p.payload[..]), ("é", &b"!"[..]));
}

#[test]
fn publish_decodes_without_copying_topic_or_payload() {
    let bytes = frame(0x32, &[0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i']);
    let mut buf = BytesMut::from(&bytes[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Packet::Publish(p)) = decode(&mut buf, V311, u32::MAX).expect("valid") else {
        panic!("not a PUBLISH");
    };
    assert!(range.contains(&(p.topic.as_ptr() as usize)));
    assert!(range.contains(&(p.payload.as_ptr() as usize)));
    assert_eq!(
        (&*p.topic, p.packet_id, p.qos),
        ("a/b", 7, QoS::AtLeastOnce)
    );
}

#[test]
fn publish_packet_id_0_and_empty_topic_are_protocol_errors() {
    assert!(protocol(dec(&frame(0x32, &[0, 1, b't', 0, 0]), V311))); // [MQTT-2.2.1-3]
    assert!(protocol(dec(&frame(0x30, &[0, 0, b'x']), V311))); // [MQTT-4.7.3-1]
    assert!(protocol(dec(&frame(0x30, &[0, 0, 0]), V5)));
    // 5.0: an empty topic with a topic alias is fine; alias 0 is not. [MQTT-3.3.2-8]
    let Packet::Publish(p) = dec_one(&frame(0x30, &[0, 0, 3, 0x23, 0, 9]), V5) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.properties.topic_alias, Some(9));
    let alias_0 = dec(&frame(0x30, &[0, 0, 3, 0x23, 0, 0]), V5);
    assert_eq!(alias_0, Err(DecodeError::TopicAliasInvalid));
    assert_eq!(DecodeError::TopicAliasInvalid.reason_code(), 0x94);
}

#[test]
fn publish_subscription_identifiers_repeat_and_0_is_a_protocol_error() {
    let props = [7, 0x0B, 1, 0x0B, 0x80, 0x01, 0x01, 1];
    let mut body = vec![0, 1, b't'];
    body.extend_from_slice(&props);
    let Packet::Publish(p) = dec_one(&frame(0x30, &body), V5) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 128]);
    assert_eq!(p.properties.payload_format_indicator, Some(1));
    assert!(protocol(dec(&frame(0x30, &[0, 1, b't', 2, 0x0B, 0]), V5)));
}

#[test]
fn encode_publish_matches_encode_and_clears_dup_on_qos_0() {
    let p = Publish {
        dup: true,
        topic: "a/b".into(),
        payload: Bytes::from_static(b"x"),
        retain: true,
        ..Publish::default()
    };
    let mut fast = BytesMut::new();
    encode_publish(&p, ProtocolVersion::V5, &mut fast).expect("encodable");
    assert_eq!(
        &fast[..],
        &enc(&Packet::Publish(p), ProtocolVersion::V5)[..]
    );
    assert_eq!(&fast[..], &[0x31, 7, 0, 3, b'a', b'/', b'b', 0, b'x']);
}

#[test]
fn failed_encode_appends_nothing() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let long = "x".repeat(70_000);
    let p = Publish {
        topic: long.into(),
        ..Publish::default()
    };
    let err = encode_publish(&p, ProtocolVersion::V311, &mut buf);
    assert_eq!(err, Err(EncodeError::StringTooLong(70_000)));
    let p = Publish {
        topic: "t".into(),
        qos: QoS::AtLeastOnce,
        ..Publish::default()
    };
    let err = encode_publish(&p, ProtocolVersion::V311, &mut buf);
    assert!(matches!(err, Err(EncodeError::Invalid(_))));
    let nul = Publish {
        topic: "a\0b".into(),
        ..Publish::default()
    };
    assert!(encode_publish(&nul, ProtocolVersion::V311, &mut buf).is_err());
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn encode_refuses_connect_that_would_not_decode() {
    let mut c = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 0,
        client_id: "c".into(),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"pw")),
        properties: ConnectProperties::default(),
    };
    let mut buf = BytesMut::new();
    let packet = Packet::Connect(Box::new(c.clone()));
    assert!(encode(&packet, ProtocolVersion::V311, &mut buf).is_err());
    assert!(encode(&packet, ProtocolVersion::V5, &mut buf).is_err()); // version mismatch
    c.protocol = ProtocolVersion::V5;
    c.will = Some(LastWill {
        topic: "w".into(),
        payload: Bytes::new(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let packet = Packet::Connect(Box::new(c));
    assert_eq!(dec_one(&enc(&packet, ProtocolVersion::V5), None), packet);
}
