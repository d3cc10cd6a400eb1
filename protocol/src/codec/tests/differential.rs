//! Differential test against mqttbytes 0.6 for 3.1.1 (its v4 module is
//! sound): our encodings of PUBLISH, SUBSCRIBE and CONNECT read back in
//! `mqttbytes::v4::read` with the same fields, and its encodings decode in
//! ours to the same packet.

use bytes::{Bytes, BytesMut};
use mqttbytes::v4;
use proptest::option::of;
use proptest::prelude::*;

use super::strategies::{binary, publish, qos, string, subscribe};
use super::*;
use crate::packet::{Connect, LastWill, QoS};

const P311: ProtocolVersion = ProtocolVersion::V311;

fn theirs_qos(q: QoS) -> mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

fn theirs_read(bytes: &[u8]) -> v4::Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = v4::read(&mut buf, 1 << 20).expect("mqttbytes reads our encoding");
    assert!(buf.is_empty());
    packet
}

/// A 3.1.1 CONNECT in the subset mqttbytes can represent: it treats an
/// empty user name or password as absent and wants a UTF-8 password.
fn connect() -> impl Strategy<Value = Connect> {
    let word = "[a-z0-9]{1,8}";
    let login = of((word, of(word)));
    let will = of((string(), binary(), qos(), any::<bool>()));
    (any::<bool>(), any::<u16>(), string(), will, login).prop_map(
        |(clean_start, keep_alive, client_id, will, login)| Connect {
            protocol: P311,
            clean_start,
            keep_alive,
            client_id,
            will: will.map(|(topic, payload, qos, retain)| LastWill {
                topic,
                payload,
                qos,
                retain,
                properties: Default::default(),
            }),
            username: login.as_ref().map(|(u, _)| u.as_str().into()),
            password: login.and_then(|(_, p)| p).map(Bytes::from),
            properties: Default::default(),
        },
    )
}

fn theirs_connect(c: &Connect) -> v4::Connect {
    let mut theirs = v4::Connect::new(c.client_id.to_string());
    theirs.keep_alive = c.keep_alive;
    theirs.clean_session = c.clean_start;
    theirs.last_will = c.will.as_ref().map(|w| {
        v4::LastWill::new(
            w.topic.to_string(),
            w.payload.to_vec(),
            theirs_qos(w.qos),
            w.retain,
        )
    });
    theirs.login = c.username.as_ref().map(|u| {
        let password = c.password.as_deref().unwrap_or_default();
        v4::Login::new(
            u.to_string(),
            String::from_utf8_lossy(password).into_owned(),
        )
    });
    theirs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn publish_agrees_with_mqttbytes(p in publish(P311)) {
        let ours = enc(&Packet::Publish(p.clone()), P311);
        let v4::Packet::Publish(t) = theirs_read(&ours) else {
            return Err(TestCaseError::fail("not a PUBLISH"));
        };
        prop_assert_eq!((t.dup, t.qos, t.retain), (p.dup, theirs_qos(p.qos), p.retain));
        prop_assert_eq!((&*t.topic, t.pkid, &t.payload), (&*p.topic, p.packet_id, &p.payload));

        let mut theirs = v4::Publish::from_bytes(p.topic.to_string(), t.qos, p.payload.clone());
        (theirs.dup, theirs.retain, theirs.pkid) = (p.dup, p.retain, p.packet_id);
        let mut buf = BytesMut::new();
        theirs.write(&mut buf).expect("mqttbytes writes");
        prop_assert_eq!(&buf[..], &ours[..]);
        prop_assert_eq!(dec_one(&buf, V311), Packet::Publish(p));
    }

    #[test]
    fn subscribe_agrees_with_mqttbytes(s in subscribe(P311)) {
        let ours = enc(&Packet::Subscribe(s.clone()), P311);
        let v4::Packet::Subscribe(t) = theirs_read(&ours) else {
            return Err(TestCaseError::fail("not a SUBSCRIBE"));
        };
        prop_assert_eq!(t.pkid, s.packet_id);
        let theirs_filters: Vec<_> = t.filters.iter().map(|f| (f.path.clone(), f.qos)).collect();
        let our_filters: Vec<_> =
            s.filters.iter().map(|f| (f.filter.to_string(), theirs_qos(f.options.qos))).collect();
        prop_assert_eq!(theirs_filters, our_filters);

        let mut buf = BytesMut::new();
        t.write(&mut buf).expect("mqttbytes writes");
        prop_assert_eq!(dec_one(&buf, V311), Packet::Subscribe(s));
    }

    #[test]
    fn connect_agrees_with_mqttbytes(c in connect()) {
        let ours = enc(&Packet::Connect(Box::new(c.clone())), P311);
        let v4::Packet::Connect(t) = theirs_read(&ours) else {
            return Err(TestCaseError::fail("not a CONNECT"));
        };
        prop_assert_eq!(&t, &theirs_connect(&c));

        let mut buf = BytesMut::new();
        theirs_connect(&c).write(&mut buf).expect("mqttbytes writes");
        prop_assert_eq!(&buf[..], &ours[..]);
        prop_assert_eq!(dec_one(&buf, None), Packet::Connect(Box::new(c)));
    }
}
