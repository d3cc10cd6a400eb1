//! Proptest strategies for every packet type, producing only values that are
//! valid for the given protocol version (no properties or reason codes for
//! 3.1.1, non-zero packet ids, at least one topic filter, ...).

use bytes::Bytes;
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use crate::codec::wire::VARINT_MAX;
use crate::packet::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A string of up to `max` chars, any Unicode except U+0000.
pub(super) fn string_up_to(max: usize) -> impl Strategy<Value = ByteString> + Clone {
    vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..=max)
        .prop_map(|chars| ByteString::from(chars.into_iter().collect::<String>()))
}

pub(super) fn string() -> impl Strategy<Value = ByteString> + Clone {
    string_up_to(8)
}

pub(super) fn binary() -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

pub(super) fn qos() -> impl Strategy<Value = QoS> + Clone {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> + Clone {
    vec((string(), string()), 0..3)
}

fn flag() -> impl Strategy<Value = Option<u8>> + Clone {
    of(0u8..=1)
}

fn nonzero_u16() -> impl Strategy<Value = u16> + Clone {
    1u16..
}

fn subscription_id() -> impl Strategy<Value = u32> + Clone {
    1..=VARINT_MAX
}

/// `strategy` for 5.0, the default value for 3.1.1.
fn v5_only<T, S>(v: ProtocolVersion, strategy: S) -> BoxedStrategy<T>
where
    T: Default + Clone + std::fmt::Debug + 'static,
    S: Strategy<Value = T> + 'static,
{
    if v == V5 {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn connect_props() -> impl Strategy<Value = ConnectProperties> {
    let auth = of((string(), of(binary())));
    (
        (
            of(any::<u32>()),
            of(nonzero_u16()),
            of(1u32..),
            of(any::<u16>()),
        ),
        (flag(), flag(), users(), auth),
    )
        .prop_map(
            |((session, receive, size, alias), (resp, problem, users, auth))| {
                let (authentication_method, authentication_data) = match auth {
                    Some((method, data)) => (Some(method), data),
                    None => (None, None),
                };
                ConnectProperties {
                    session_expiry_interval: session,
                    receive_maximum: receive,
                    maximum_packet_size: size,
                    topic_alias_maximum: alias,
                    request_response_information: resp,
                    request_problem_information: problem,
                    user_properties: users,
                    authentication_method,
                    authentication_data,
                }
            },
        )
}

fn will_props() -> impl Strategy<Value = WillProperties> {
    (
        (of(any::<u32>()), flag(), of(any::<u32>())),
        (of(string()), of(string()), of(binary()), users()),
    )
        .prop_map(
            |((delay, format, expiry), (content, response, corr, users))| WillProperties {
                delay_interval: delay,
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                content_type: content,
                response_topic: response,
                correlation_data: corr,
                user_properties: users,
            },
        )
}

fn will(v: ProtocolVersion) -> impl Strategy<Value = LastWill> {
    (
        string(),
        binary(),
        qos(),
        any::<bool>(),
        v5_only(v, will_props()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

pub(super) fn connect(v: ProtocolVersion) -> impl Strategy<Value = Connect> {
    let login = (of(string()), of(binary()))
        .prop_filter("3.1.1: no password without user name", move |(u, p)| {
            v == V5 || u.is_some() || p.is_none()
        });
    (
        (any::<bool>(), any::<u16>(), string(), of(will(v))),
        (login, v5_only(v, connect_props())),
    )
        .prop_map(
            move |(
                (clean_start, keep_alive, client_id, will),
                ((username, password), properties),
            )| {
                Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }
            },
        )
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    let limits = (
        of(any::<u32>()),
        of(nonzero_u16()),
        flag(),
        flag(),
        of(1u32..),
    );
    let names = (of(string()), of(any::<u16>()), of(string()), users());
    let features = (flag(), flag(), flag(), of(any::<u16>()));
    let rest = (of(string()), of(string()), of(string()), of(binary()));
    (limits, names, features, rest).prop_map(|(l, n, f, r)| ConnAckProperties {
        session_expiry_interval: l.0,
        receive_maximum: l.1,
        maximum_qos: l.2,
        retain_available: l.3,
        maximum_packet_size: l.4,
        assigned_client_identifier: n.0,
        topic_alias_maximum: n.1,
        reason_string: n.2,
        user_properties: n.3,
        wildcard_subscription_available: f.0,
        subscription_identifiers_available: f.1,
        shared_subscription_available: f.2,
        server_keep_alive: f.3,
        response_information: r.0,
        server_reference: r.1,
        authentication_method: r.2,
        authentication_data: r.3,
    })
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = ConnAck> {
    let code = if v == V5 {
        any::<u8>().boxed()
    } else {
        prop::sample::select(vec![0x00, 0x84, 0x85, 0x88, 0x86, 0x87]).boxed()
    };
    (any::<bool>(), code, v5_only(v, connack_props())).prop_map(|(present, code, properties)| {
        ConnAck {
            session_present: present && code == 0,
            code,
            properties,
        }
    })
}

fn publish_props() -> impl Strategy<Value = PublishProperties> {
    (
        (flag(), of(any::<u32>()), of(nonzero_u16()), of(string())),
        (
            of(binary()),
            users(),
            vec(subscription_id(), 0..3),
            of(string()),
        ),
    )
        .prop_map(
            |((format, expiry, alias, response), (corr, users, ids, content))| PublishProperties {
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                topic_alias: alias,
                response_topic: response,
                correlation_data: corr,
                user_properties: users,
                subscription_identifiers: ids,
                content_type: content,
            },
        )
}

pub(super) fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        (any::<bool>(), qos(), any::<bool>(), string()),
        (nonzero_u16(), v5_only(v, publish_props()), binary()),
    )
        .prop_filter("topic or alias", |((_, _, _, topic), (_, props, _))| {
            !topic.is_empty() || props.topic_alias.is_some()
        })
        .prop_map(|((dup, qos, retain, topic), (id, properties, payload))| {
            let at_most_once = qos == QoS::AtMostOnce;
            Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: if at_most_once { 0 } else { id },
                properties,
                payload,
            }
        })
}

fn ack_props(v: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    let props =
        (of(string()), users()).prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        });
    v5_only(v, props)
}

fn ack(v: ProtocolVersion) -> impl Strategy<Value = Ack> {
    (any::<u16>(), v5_only(v, any::<u8>()), ack_props(v)).prop_map(
        |(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        },
    )
}

fn options(v: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = prop_oneof![
        Just(RetainHandling::OnSubscribe),
        Just(RetainHandling::OnNewSubscribe),
        Just(RetainHandling::Never),
    ];
    let extras = v5_only(
        v,
        (any::<bool>(), any::<bool>(), handling)
            .prop_map(|e| SubscriptionOptionsExtras(e.0, e.1, e.2)),
    );
    (qos(), extras).prop_map(|(qos, e)| SubscriptionOptions {
        qos,
        no_local: e.0,
        retain_as_published: e.1,
        retain_handling: e.2,
    })
}

/// The 5.0-only part of the subscription options.
#[derive(Debug, Clone, Default)]
struct SubscriptionOptionsExtras(bool, bool, RetainHandling);

pub(super) fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    let filter =
        (string(), options(v)).prop_map(|(filter, options)| SubscribeFilter { filter, options });
    let props = (of(subscription_id()), users()).prop_map(|(id, users)| SubscribeProperties {
        subscription_identifier: id,
        user_properties: users,
    });
    (nonzero_u16(), vec(filter, 1..4), v5_only(v, props)).prop_map(
        |(packet_id, filters, properties)| Subscribe {
            packet_id,
            filters,
            properties,
        },
    )
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = SubAck> {
    let code = if v == V5 {
        any::<u8>().boxed()
    } else {
        prop::sample::select(vec![0u8, 1, 2, 0x80]).boxed()
    };
    (any::<u16>(), vec(code, 1..4), ack_props(v)).prop_map(
        |(packet_id, reason_codes, properties)| SubAck {
            packet_id,
            reason_codes,
            properties,
        },
    )
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Unsubscribe> {
    (nonzero_u16(), vec(string(), 1..4), v5_only(v, users())).prop_map(
        |(packet_id, filters, user_properties)| Unsubscribe {
            packet_id,
            filters,
            user_properties,
        },
    )
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = UnsubAck> {
    let codes = v5_only(v, vec(any::<u8>(), 1..4));
    (any::<u16>(), codes, ack_props(v)).prop_map(|(packet_id, reason_codes, properties)| UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn disconnect_props() -> impl Strategy<Value = DisconnectProperties> {
    (of(any::<u32>()), of(string()), users(), of(string())).prop_map(
        |(expiry, reason, users, server)| DisconnectProperties {
            session_expiry_interval: expiry,
            reason_string: reason,
            user_properties: users,
            server_reference: server,
        },
    )
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Disconnect> {
    v5_only(v, (any::<u8>(), disconnect_props()))
        .prop_map(|(reason, properties)| Disconnect { reason, properties })
}

fn auth() -> impl Strategy<Value = Auth> {
    let props = (of(string()), of(binary()), of(string()), users()).prop_map(|p| AuthProperties {
        authentication_method: p.0,
        authentication_data: p.1,
        reason_string: p.2,
        user_properties: p.3,
    });
    (any::<u8>(), props).prop_map(|(reason, properties)| Auth { reason, properties })
}

/// Any packet valid for `v`.
pub(super) fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v).prop_map(|c| Packet::Connect(Box::new(c))),
        connack(v).prop_map(Packet::ConnAck),
        publish(v).prop_map(Packet::Publish),
        ack(v).prop_map(Packet::PubAck),
        ack(v).prop_map(Packet::PubRec),
        ack(v).prop_map(Packet::PubRel),
        ack(v).prop_map(Packet::PubComp),
        subscribe(v).prop_map(Packet::Subscribe),
        suback(v).prop_map(Packet::SubAck),
        unsubscribe(v).prop_map(Packet::Unsubscribe),
        unsuback(v).prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v).prop_map(Packet::Disconnect),
    ];
    if v == V5 {
        prop_oneof![14 => common, 1 => auth().prop_map(Packet::Auth)].boxed()
    } else {
        common.boxed()
    }
}
