//! Edge cases of the acks, DISCONNECT, AUTH, SUBSCRIBE family and CONNACK,
//! with hand-written byte vectors.

use bytes::Bytes;

use super::*;
use crate::codec::EncodeError;
use crate::packet::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, Disconnect, QoS, RetainHandling, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};

const P311: ProtocolVersion = ProtocolVersion::V311;
const P5: ProtocolVersion = ProtocolVersion::V5;

#[test]
fn v5_puback_short_forms() {
    // Remaining length 2: success, no properties. [MQTT-3.4.2.1]
    assert_eq!(dec_one(&[0x40, 2, 0, 7], V5), Packet::PubAck(Ack::new(7)));
    // Remaining length 3: a reason code alone.
    assert_eq!(
        dec_one(&[0x50, 3, 0, 7, 0x10], V5),
        Packet::PubRec(Ack::with_reason(7, 0x10))
    );
    // Remaining length 4: reason code and an empty property list.
    assert_eq!(
        dec_one(&[0x70, 4, 0, 7, 0x92, 0], V5),
        Packet::PubComp(Ack::with_reason(7, 0x92))
    );
    // With a reason string.
    let with_props = dec_one(&[0x62, 8, 0, 7, 0x92, 4, 0x1F, 0, 1, b'r'], V5);
    let properties = AckProperties {
        reason_string: Some("r".into()),
        ..Default::default()
    };
    assert_eq!(
        with_props,
        Packet::PubRel(Ack {
            packet_id: 7,
            reason: 0x92,
            properties
        })
    );
}

#[test]
fn v5_puback_encodes_in_shortest_form() {
    assert_eq!(enc(&Packet::PubAck(Ack::new(7)), P5), [0x40, 2, 0, 7]);
    assert_eq!(
        enc(&Packet::PubRec(Ack::with_reason(7, 0x10)), P5),
        [0x50, 3, 0, 7, 0x10]
    );
    let properties = AckProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    let ack = Packet::PubComp(Ack {
        packet_id: 7,
        reason: 0,
        properties,
    });
    assert_eq!(
        enc(&ack, P5),
        [0x70, 11, 0, 7, 0, 7, 0x26, 0, 1, b'k', 0, 1, b'v']
    );
}

#[test]
fn v311_acks_are_exactly_a_packet_id() {
    assert_eq!(dec_one(&[0x40, 2, 0, 7], V311), Packet::PubAck(Ack::new(7)));
    assert!(malformed(dec(&[0x40, 3, 0, 7, 0], V311)));
    assert!(malformed(dec(&[0x40, 1, 0], V311)));
    // 5.0-only fields are dropped when writing 3.1.1.
    assert_eq!(
        enc(&Packet::PubAck(Ack::with_reason(7, 0x10)), P311),
        [0x40, 2, 0, 7]
    );
}

#[test]
fn v5_acks_reject_foreign_properties() {
    // Session expiry interval is not allowed in PUBACK.
    assert!(protocol(dec(&[0x40, 9, 0, 7, 0, 5, 0x11, 0, 0, 0, 1], V5)));
    // A property list longer than the packet.
    assert!(malformed(dec(&[0x40, 5, 0, 7, 0, 9, 0x1F], V5)));
}

#[test]
fn v5_disconnect_remaining_length_0_and_1() {
    // [MQTT-3.14.2.1]: remaining length 0 means normal disconnection.
    assert_eq!(
        dec_one(&[0xE0, 0], V5),
        Packet::Disconnect(Disconnect::default())
    );
    assert_eq!(
        dec_one(&[0xE0, 1, 0x8E], V5),
        Packet::Disconnect(Disconnect::with_reason(0x8E))
    );
    let with_props = dec_one(&[0xE0, 7, 0x04, 5, 0x11, 0, 0, 0, 9], V5);
    let Packet::Disconnect(d) = with_props else {
        panic!("not a DISCONNECT")
    };
    assert_eq!(
        (d.reason, d.properties.session_expiry_interval),
        (4, Some(9))
    );
    assert!(protocol(dec(&[0xE0, 4, 0, 2, 0x23, 0], V5))); // topic alias
}

#[test]
fn disconnect_encodes_in_shortest_form() {
    assert_eq!(
        enc(&Packet::Disconnect(Disconnect::default()), P5),
        [0xE0, 0]
    );
    assert_eq!(
        enc(&Packet::Disconnect(Disconnect::with_reason(0x8E)), P5),
        [0xE0, 1, 0x8E]
    );
    assert_eq!(
        enc(&Packet::Disconnect(Disconnect::with_reason(0x8E)), P311),
        [0xE0, 0]
    );
    assert!(malformed(dec(&[0xE0, 1, 0], V311)));
}

#[test]
fn auth_remaining_length_0_1_and_properties() {
    assert_eq!(dec_one(&[0xF0, 0], V5), Packet::Auth(Auth::default()));
    let reauth = Auth {
        reason: 0x19,
        ..Auth::default()
    };
    assert_eq!(dec_one(&[0xF0, 1, 0x19], V5), Packet::Auth(reauth.clone()));
    assert_eq!(enc(&Packet::Auth(reauth), P5), [0xF0, 1, 0x19]);
    let properties = AuthProperties {
        authentication_method: Some("m".into()),
        authentication_data: Some(Bytes::from_static(b"d")),
        ..Default::default()
    };
    let auth = Packet::Auth(Auth {
        reason: 0x18,
        properties,
    });
    let bytes = enc(&auth, P5);
    assert_eq!(
        bytes,
        [0xF0, 10, 0x18, 8, 0x15, 0, 1, b'm', 0x16, 0, 1, b'd']
    );
    assert_eq!(dec_one(&bytes, V5), auth);
    let mut buf = bytes::BytesMut::new();
    let err = encode(&auth, P311, &mut buf);
    assert!(matches!(err, Err(EncodeError::Invalid(_))));
}

#[test]
fn subscribe_needs_a_filter_and_a_packet_id() {
    assert!(protocol(dec(&[0x82, 2, 0, 1], V311))); // [MQTT-3.8.3-3]
    assert!(protocol(dec(&[0x82, 3, 0, 1, 0], V5)));
    assert!(protocol(dec(&[0x82, 6, 0, 0, 0, 1, b'a', 0], V311))); // [MQTT-2.2.1-3]
    assert!(protocol(dec(&[0xA2, 2, 0, 1], V311))); // [MQTT-3.10.3-2]
    assert!(protocol(dec(&[0xA2, 5, 0, 0, 0, 1, b'a'], V311)));
    // A filter without its options byte.
    assert!(malformed(dec(&[0x82, 5, 0, 1, 0, 1, b'a'], V311)));
}

#[test]
fn subscription_options_reserved_bits() {
    let sub = |v: Option<ProtocolVersion>, options: u8| match v {
        V5 => dec(&[0x82, 7, 0, 1, 0, 0, 1, b'a', options], v),
        _ => dec(&[0x82, 6, 0, 1, 0, 1, b'a', options], v),
    };
    assert!(malformed(sub(V311, 0x04))); // [MQTT-3.8.3-4] (3.1.1): bits 2-7
    assert!(malformed(sub(V311, 0x03)));
    assert!(malformed(sub(V5, 0x40))); // [MQTT-3.8.3-5]: bits 6-7
    assert!(malformed(sub(V5, 0x80)));
    assert!(protocol(sub(V5, 0x30))); // retain handling 3
    assert!(protocol(sub(V5, 0x03))); // QoS 3
    let Ok(Some(Packet::Subscribe(s))) = sub(V5, 0x2E) else {
        panic!("not a SUBSCRIBE")
    };
    let expected = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::Never,
    };
    assert_eq!(s.filters[0].options, expected);
}

#[test]
fn subscribe_v5_properties_and_order_of_user_properties() {
    let mut props = vec![16, 0x0B, 5];
    props.extend_from_slice(&[0x26, 0, 1, b'k', 0, 1, b'2']);
    props.extend_from_slice(&[0x26, 0, 1, b'k', 0, 1, b'1']);
    let mut body = vec![0, 1];
    body.extend_from_slice(&props);
    body.extend_from_slice(&[0, 1, b'a', 1]);
    let buf = frame(0x82, &body);
    let Packet::Subscribe(s) = dec_one(&buf, V5) else {
        panic!("not a SUBSCRIBE")
    };
    assert_eq!(s.properties.subscription_identifier, Some(5));
    let users: Vec<(&str, &str)> = s
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (&**k, &**v))
        .collect();
    assert_eq!(users, [("k", "2"), ("k", "1")]);
    // Subscription identifier 0, and twice.
    assert!(protocol(dec(
        &[0x82, 8, 0, 1, 2, 0x0B, 0, 0, 1, b'a', 0],
        V5
    )));
    let twice = [0x82, 10, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0];
    assert!(protocol(dec(&twice[..], V5)));
}

#[test]
fn suback_and_unsuback_311_and_5() {
    let suback = Packet::SubAck(SubAck {
        packet_id: 3,
        reason_codes: vec![0, 2, 0x87],
        ..Default::default()
    });
    // 3.1.1 has a single failure return code, 0x80.
    assert_eq!(enc(&suback, P311), [0x90, 5, 0, 3, 0, 2, 0x80]);
    assert_eq!(enc(&suback, P5), [0x90, 6, 0, 3, 0, 0, 2, 0x87]);
    assert!(malformed(dec(&[0x90, 3, 0, 3, 0x87], V311))); // [MQTT-3.9.3-2] (3.1.1)
    assert!(protocol(dec(&[0x90, 2, 0, 3], V311)));
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 3,
        reason_codes: vec![0x11],
        ..Default::default()
    });
    // 3.1.1 UNSUBACK has no reason codes.
    assert_eq!(enc(&unsuback, P311), [0xB0, 2, 0, 3]);
    assert_eq!(enc(&unsuback, P5), [0xB0, 4, 0, 3, 0, 0x11]);
    assert_eq!(dec_one(&[0xB0, 4, 0, 3, 0, 0x11], V5), unsuback);
    assert!(malformed(dec(&[0xB0, 3, 0, 3, 0], V311)));
}

#[test]
fn subscribe_encode_refuses_what_decode_rejects() {
    let mut buf = bytes::BytesMut::new();
    let empty = Packet::Subscribe(Subscribe {
        packet_id: 1,
        ..Default::default()
    });
    assert!(encode(&empty, P5, &mut buf).is_err());
    let filter = SubscribeFilter {
        filter: "a".into(),
        options: SubscriptionOptions::default(),
    };
    let id0 = Packet::Subscribe(Subscribe {
        packet_id: 0,
        filters: vec![filter],
        ..Default::default()
    });
    assert!(encode(&id0, P311, &mut buf).is_err());
    let unsub = Packet::Unsubscribe(Unsubscribe {
        packet_id: 1,
        ..Default::default()
    });
    assert!(encode(&unsub, P311, &mut buf).is_err());
    assert!(buf.is_empty());
}

#[test]
fn connack_311_maps_reason_codes_to_return_codes() {
    let cases = [
        (0x00, 0),
        (0x84, 1),
        (0x85, 2),
        (0x88, 3),
        (0x89, 3),
        (0x97, 3),
        (0x80, 3),
        (0x86, 4),
        (0x87, 5),
        (0x8C, 5),
    ];
    for (code, expected) in cases {
        let connack = Packet::ConnAck(ConnAck {
            code,
            ..Default::default()
        });
        assert_eq!(enc(&connack, P311), [0x20, 2, 0, expected], "{code:#x}");
    }
    let back = [
        (0, 0x00),
        (1, 0x84),
        (2, 0x85),
        (3, 0x88),
        (4, 0x86),
        (5, 0x87),
    ];
    for (code, expected) in back {
        let Packet::ConnAck(c) = dec_one(&[0x20, 2, 0, code], V311) else {
            panic!("not a CONNACK")
        };
        assert_eq!(c.code, expected);
    }
    assert!(malformed(dec(&[0x20, 2, 0, 6], V311)));
}

#[test]
fn connack_flags_and_session_present() {
    assert!(malformed(dec(&[0x20, 2, 0x02, 0], V311))); // [MQTT-3.2.2-1]
    assert!(protocol(dec(&[0x20, 2, 1, 5], V311))); // session present on refusal
    let present = Packet::ConnAck(ConnAck {
        session_present: true,
        ..Default::default()
    });
    assert_eq!(enc(&present, P5), [0x20, 3, 1, 0, 0]);
    assert_eq!(dec_one(&[0x20, 3, 1, 0, 0], V5), present);
    // Session present is never written with a failure code.
    let refused = Packet::ConnAck(ConnAck {
        session_present: true,
        code: 0x87,
        ..Default::default()
    });
    assert_eq!(enc(&refused, P311), [0x20, 2, 0, 5]);
    // Maximum QoS 2 is a protocol error; wildcard available twice too.
    assert!(protocol(dec(&[0x20, 5, 0, 0, 2, 0x24, 2], V5)));
    assert!(protocol(dec(&[0x20, 7, 0, 0, 4, 0x28, 1, 0x28, 1], V5)));
}

#[test]
fn ping_has_no_body() {
    assert_eq!(enc(&Packet::PingReq, P311), [0xC0, 0]);
    assert_eq!(enc(&Packet::PingResp, P5), [0xD0, 0]);
    assert!(malformed(dec(&[0xC0, 1, 0], V5)));
    assert_eq!(dec_one(&[0xD0, 0], V311), Packet::PingResp);
}

#[test]
fn reason_codes_of_decode_errors() {
    assert_eq!(DecodeError::Malformed("x").reason_code(), 0x81);
    assert_eq!(DecodeError::Protocol("x").reason_code(), 0x82);
    assert_eq!(
        DecodeError::PacketTooLarge { size: 2, max: 1 }.reason_code(),
        0x95
    );
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(3).reason_code(),
        0x84
    );
}
