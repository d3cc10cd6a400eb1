//! DISCONNECT from the client (will, session expiry) and keep alive.

use super::*;

fn disconnect(code: u8, session_expiry: Option<u32>) -> Packet {
    let mut d = Disconnect::with_reason(code);
    d.properties.session_expiry_interval = session_expiry;
    Packet::Disconnect(d)
}

// ---- DISCONNECT ----------------------------------------------------------

#[test]
fn normal_disconnect_discards_the_will() {
    // [MQTT-3.14.4-3] [MQTT-3.1.2-10]
    for version in [V311, V5] {
        let (mut ch, now) = connected(version);
        let want = vec![
            Effect::Disconnected {
                publish_will: false,
                session_expiry: None,
            },
            Effect::Close { reason: None },
        ];
        assert_eq!(
            feed(&mut ch, disconnect(reason::NORMAL_DISCONNECTION, None), now),
            want
        );
        assert_eq!(ch.state(), ChannelState::Closed);
        assert_eq!(feed(&mut ch, Packet::PingReq, now), vec![]);
    }
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    // §3.14.2.1 0x04 Disconnect with Will Message.
    let (mut ch, now) = connected(V5);
    let want = vec![
        Effect::Disconnected {
            publish_will: true,
            session_expiry: None,
        },
        Effect::Close { reason: None },
    ];
    assert_eq!(
        feed(&mut ch, disconnect(reason::DISCONNECT_WITH_WILL, None), now),
        want
    );
}

#[test]
fn disconnect_with_an_error_reason_publishes_the_will() {
    // [MQTT-3.1.2-10] the will is discarded only on reason 0x00; §3.1.2.5:
    // it is published when the client closes "without first sending a
    // DISCONNECT packet with a Reason Code 0x00".
    for code in [reason::UNSPECIFIED_ERROR, reason::MESSAGE_RATE_TOO_HIGH] {
        let (mut ch, now) = connected(V5);
        let want = vec![
            Effect::Disconnected {
                publish_will: true,
                session_expiry: None,
            },
            Effect::Close { reason: None },
        ];
        assert_eq!(
            feed(&mut ch, disconnect(code, None), now),
            want,
            "reason {code:#x}"
        );
    }
}

#[test]
fn disconnect_may_change_a_nonzero_session_expiry_within_the_cap() {
    // §3.14.2.2.2 the DISCONNECT value replaces the CONNECT one.
    let config = ChannelConfig {
        max_session_expiry: 600,
        ..ChannelConfig::default()
    };
    for (asked, effective) in [(0, 0), (60, 60), (10_000, 600)] {
        let (mut ch, now) = new_channel(config.clone());
        let mut c = connect_packet(V5, "c1", false, 10);
        c.properties.session_expiry_interval = Some(100);
        let info = accept(&mut ch, c, now);
        connack(&mut ch, false, &info);
        let want = vec![
            Effect::Disconnected {
                publish_will: false,
                session_expiry: Some(effective),
            },
            Effect::Close { reason: None },
        ];
        assert_eq!(feed(&mut ch, disconnect(0, Some(asked)), now), want);
        assert_eq!(ch.session_expiry(), effective);
    }
}

#[test]
fn disconnect_setting_expiry_after_zero_in_connect_is_a_protocol_error() {
    // §3.14.2.2.2 CONNECT had 0: a non-zero value in DISCONNECT is a
    // Protocol Error (and the will is then published).
    let (mut ch, now) = connected(V5);
    assert_eq!(
        feed(&mut ch, disconnect(0, Some(30)), now),
        close(Some(reason::PROTOCOL_ERROR))
    );
    assert_eq!(ch.session_expiry(), 0);

    // Repeating 0 is fine.
    let (mut ch, now) = connected(V5);
    let want = vec![
        Effect::Disconnected {
            publish_will: false,
            session_expiry: Some(0),
        },
        Effect::Close { reason: None },
    ];
    assert_eq!(feed(&mut ch, disconnect(0, Some(0)), now), want);
}

#[test]
fn disconnect_expiry_is_checked_against_connect_not_the_broker_cap() {
    // §3.14.2.2.2 speaks of the value "in the CONNECT packet": a client that
    // asked for 100 but was capped to 0 has not broken the protocol.
    let (mut ch, now) = new_channel(ChannelConfig {
        max_session_expiry: 0,
        ..ChannelConfig::default()
    });
    let mut c = connect_packet(V5, "c1", false, 10);
    c.properties.session_expiry_interval = Some(100);
    let info = accept(&mut ch, c, now);
    assert_eq!(info.session_expiry, 0);
    connack(&mut ch, false, &info);
    let want = vec![
        Effect::Disconnected {
            publish_will: false,
            session_expiry: Some(0),
        },
        Effect::Close { reason: None },
    ];
    assert_eq!(feed(&mut ch, disconnect(0, Some(50)), now), want);
}

// ---- keep alive ----------------------------------------------------------

fn keep_alive_check(ch: &mut Channel, at: Instant) -> Vec<Effect> {
    let mut out = Vec::new();
    ch.check_keep_alive(at, &mut out);
    out
}

#[test]
fn keep_alive_times_out_after_one_and_a_half_periods() {
    // [MQTT-3.1.2-24] (3.1.1; [MQTT-3.1.2-22] in 5.0): keep alive 10 s.
    let (mut ch, t0) = connected(V5);
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(14)),
        vec![]
    );
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(15)),
        vec![]
    );
    let late = t0 + Duration::from_millis(15_001);
    assert_eq!(
        keep_alive_check(&mut ch, late),
        close(Some(reason::KEEP_ALIVE_TIMEOUT))
    );
    assert_eq!(ch.state(), ChannelState::Closed);
    assert_eq!(
        keep_alive_check(&mut ch, late + Duration::from_secs(60)),
        vec![]
    );
}

#[test]
fn any_packet_restarts_the_keep_alive_period() {
    let (mut ch, t0) = connected(V311);
    feed(&mut ch, Packet::PingReq, t0 + Duration::from_secs(10));
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(24)),
        vec![]
    );
    feed(
        &mut ch,
        Packet::Publish(publish("a", QoS::AtMostOnce, 0)),
        t0 + Duration::from_secs(24),
    );
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(38)),
        vec![]
    );
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(40)),
        close(Some(reason::KEEP_ALIVE_TIMEOUT))
    );
}

#[test]
fn keep_alive_zero_disables_the_timeout() {
    // [MQTT-3.1.2-22] (5.0) 0 turns the mechanism off.
    let (mut ch, t0) = new_channel(ChannelConfig::default());
    let info = accept(&mut ch, connect_packet(V5, "c1", true, 0), t0);
    connack(&mut ch, false, &info);
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(100_000)),
        vec![]
    );
}

#[test]
fn server_keep_alive_sets_the_timeout_for_v5() {
    // [MQTT-3.2.2-21] the client uses the Server Keep Alive, and so do we.
    let (mut ch, t0) = new_channel(ChannelConfig {
        server_keep_alive: Some(4),
        ..ChannelConfig::default()
    });
    let info = accept(&mut ch, connect_packet(V5, "c1", true, 60), t0);
    connack(&mut ch, false, &info);
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(6)),
        vec![]
    );
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(7)),
        close(Some(reason::KEEP_ALIVE_TIMEOUT))
    );
}

#[test]
fn keep_alive_is_not_checked_before_connack() {
    // The handshake has its own timeout in the connection actor.
    let (mut ch, t0) = new_channel(ChannelConfig::default());
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(1000)),
        vec![]
    );
    accept(&mut ch, connect_packet(V5, "c1", true, 1), t0);
    assert_eq!(
        keep_alive_check(&mut ch, t0 + Duration::from_secs(1000)),
        vec![]
    );
}
