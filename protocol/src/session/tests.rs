//! Session tests: feed deliveries and acknowledgements to a [`SessionState`]
//! and assert the exact packets it sends; a proptest checks the window,
//! packet id and ordering invariants over random operation sequences.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::message::{ClientId, DeliveryOpts, Message};
use crate::packet::{Publish, PublishProperties};

mod props;

fn config(max_inflight: u16, max_mqueue_len: usize) -> SessionConfig {
    SessionConfig {
        max_inflight,
        max_mqueue_len,
        mqueue_store_qos0: true,
    }
}

/// A delivery of payload `tag` on topic "t" at `qos`, optionally expiring
/// `expiry` after `now`.
fn delivery_at(tag: &str, qos: QoS, expiry: Option<u32>, now: Instant) -> Delivery {
    let message = Message {
        id: crate::MessageId::NONE,
        topic: "t".into(),
        payload: Bytes::copy_from_slice(tag.as_bytes()),
        qos,
        retain: false,
        publisher: ClientId::new("pub"),
        properties: PublishProperties {
            message_expiry_interval: expiry,
            ..PublishProperties::default()
        },
        expires_at: expiry.map(|s| now + Duration::from_secs(u64::from(s))),
    };
    Delivery {
        message: Arc::new(message),
        opts: DeliveryOpts {
            qos,
            retain: false,
            subscription_ids: vec![],
        },
        stored: None,
    }
}

fn delivery(tag: &str, qos: QoS, now: Instant) -> Delivery {
    delivery_at(tag, qos, None, now)
}

/// The PUBLISH a delivery of `tag` produces.
fn publish(tag: &str, qos: QoS, packet_id: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: "t".into(),
        packet_id,
        properties: PublishProperties::default(),
        payload: Bytes::copy_from_slice(tag.as_bytes()),
    })
}

fn pubrel(packet_id: u16) -> Packet {
    Packet::PubRel(Ack::new(packet_id))
}

/// Deliver online and return what was sent.
fn send(s: &mut SessionState, d: Delivery, now: Instant) -> Vec<Packet> {
    let mut out = Vec::new();
    s.deliver(d, true, now, &mut out);
    out
}

fn resume(s: &mut SessionState, now: Instant) -> Vec<Packet> {
    let mut out = Vec::new();
    s.resume(now, &mut out);
    out
}

fn puback(s: &mut SessionState, id: u16, now: Instant) -> (Result<(), AckError>, Vec<Packet>) {
    let mut out = Vec::new();
    (s.puback(id, now, &mut out), out)
}

fn pubrec(
    s: &mut SessionState,
    id: u16,
    code: u8,
    now: Instant,
) -> (Result<(), AckError>, Vec<Packet>) {
    let mut out = Vec::new();
    (s.pubrec(id, code, now, &mut out), out)
}

fn pubcomp(s: &mut SessionState, id: u16, now: Instant) -> (Result<(), AckError>, Vec<Packet>) {
    let mut out = Vec::new();
    (s.pubcomp(id, now, &mut out), out)
}

const Q0: QoS = QoS::AtMostOnce;
const Q1: QoS = QoS::AtLeastOnce;
const Q2: QoS = QoS::ExactlyOnce;

// ---- online delivery and the window ---------------------------------------

#[test]
fn online_qos0_is_sent_at_once_without_packet_id() {
    // [MQTT-2.2.1-2] a QoS 0 PUBLISH has no packet identifier.
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    assert_eq!(
        send(&mut s, delivery("a", Q0, now), now),
        vec![publish("a", Q0, 0, false)]
    );
    assert_eq!((s.inflight_len(), s.mqueue_len()), (0, 0));
}

#[test]
fn qos0_is_not_held_back_by_a_full_window() {
    // [MQTT-3.3.4-9] the Receive Maximum limits QoS 1 and 2 only.
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    send(&mut s, delivery("a", Q1, now), now);
    assert_eq!(
        send(&mut s, delivery("b", Q0, now), now),
        vec![publish("b", Q0, 0, false)]
    );
}

#[test]
fn qos1_and_qos2_fill_the_window_then_queue() {
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    assert_eq!(
        send(&mut s, delivery("a", Q1, now), now),
        vec![publish("a", Q1, 1, false)]
    );
    assert_eq!(
        send(&mut s, delivery("b", Q2, now), now),
        vec![publish("b", Q2, 2, false)]
    );
    assert_eq!(send(&mut s, delivery("c", Q1, now), now), vec![]);
    assert_eq!(send(&mut s, delivery("d", Q2, now), now), vec![]);
    assert_eq!((s.inflight_len(), s.mqueue_len()), (2, 2));
}

#[test]
fn puback_frees_a_slot_and_sends_the_next_queued_in_order() {
    // [MQTT-4.6.0-5] in arrival order.
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    for tag in ["a", "b", "c"] {
        send(&mut s, delivery(tag, Q1, now), now);
    }
    assert_eq!(
        puback(&mut s, 1, now),
        (Ok(()), vec![publish("b", Q1, 2, false)])
    );
    assert_eq!(
        puback(&mut s, 2, now),
        (Ok(()), vec![publish("c", Q1, 3, false)])
    );
    assert_eq!(puback(&mut s, 3, now), (Ok(()), vec![]));
    assert_eq!((s.inflight_len(), s.mqueue_len()), (0, 0));
}

#[test]
fn new_messages_wait_behind_queued_ones() {
    // [MQTT-4.6.0-5] in arrival order: queued while offline, resumed into a
    // window of 1; a new message goes behind the queue.
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    let mut out = Vec::new();
    for tag in ["a", "b"] {
        s.deliver(delivery(tag, Q1, now), false, now, &mut out);
    }
    assert_eq!(resume(&mut s, now), vec![publish("a", Q1, 1, false)]);
    assert_eq!(send(&mut s, delivery("c", Q1, now), now), vec![]);
    assert_eq!(puback(&mut s, 1, now).1, vec![publish("b", Q1, 2, false)]);
    assert_eq!(puback(&mut s, 2, now).1, vec![publish("c", Q1, 3, false)]);
}

#[test]
fn online_delivery_before_resume_waits_behind_the_queue() {
    // The session actor delivers online as soon as a connection attaches,
    // before `resume`: a new message must not overtake the offline queue.
    // [MQTT-4.6.0-5]
    let now = Instant::now();
    let mut s = SessionState::new(config(4, 10));
    let mut out = Vec::new();
    s.deliver(delivery("a", Q1, now), false, now, &mut out);
    assert_eq!(send(&mut s, delivery("b", Q1, now), now), vec![]);
    let want = vec![publish("a", Q1, 1, false), publish("b", Q1, 2, false)];
    assert_eq!(resume(&mut s, now), want);
}

#[test]
fn qos2_pubrec_answers_pubrel_and_pubcomp_completes() {
    // [MQTT-4.3.3-4] PUBREL after a PUBREC below 0x80; [MQTT-4.3.3-5] still
    // unacknowledged (in the window) until PUBCOMP.
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    send(&mut s, delivery("a", Q2, now), now);
    send(&mut s, delivery("b", Q2, now), now);
    assert_eq!(
        pubrec(&mut s, 1, reason::SUCCESS, now),
        (Ok(()), vec![pubrel(1)])
    );
    // Still in the window until PUBCOMP.
    assert_eq!((s.inflight_len(), s.mqueue_len()), (1, 1));
    assert_eq!(
        pubcomp(&mut s, 1, now),
        (Ok(()), vec![publish("b", Q2, 2, false)])
    );
    assert_eq!(
        pubrec(&mut s, 2, reason::NO_MATCHING_SUBSCRIBERS, now),
        (Ok(()), vec![pubrel(2)])
    );
    assert_eq!(pubcomp(&mut s, 2, now), (Ok(()), vec![]));
    assert_eq!((s.inflight_len(), s.mqueue_len()), (0, 0));
}

#[test]
fn repeated_pubrec_after_pubrel_sends_pubrel_again() {
    let now = Instant::now();
    let mut s = SessionState::new(config(4, 10));
    send(&mut s, delivery("a", Q2, now), now);
    assert_eq!(
        pubrec(&mut s, 1, reason::SUCCESS, now),
        (Ok(()), vec![pubrel(1)])
    );
    assert_eq!(
        pubrec(&mut s, 1, reason::SUCCESS, now),
        (Ok(()), vec![pubrel(1)])
    );
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn pubrec_with_a_failure_reason_drops_the_message() {
    // [MQTT-4.3.3-4] no PUBREL after a PUBREC >= 0x80; §4.3.3 the id is
    // free again, and [MQTT-3.3.4-9] the window moves on.
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    send(&mut s, delivery("a", Q2, now), now);
    send(&mut s, delivery("b", Q2, now), now);
    assert_eq!(
        pubrec(&mut s, 1, reason::QUOTA_EXCEEDED, now),
        (Ok(()), vec![publish("b", Q2, 2, false)])
    );
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(pubcomp(&mut s, 1, now).0, Err(AckError::UnknownPacketId(1)));
}

#[test]
fn unknown_acknowledgements_are_errors() {
    let now = Instant::now();
    let mut s = SessionState::new(config(4, 10));
    assert_eq!(
        puback(&mut s, 9, now),
        (Err(AckError::UnknownPacketId(9)), vec![])
    );
    assert_eq!(
        pubcomp(&mut s, 9, now),
        (Err(AckError::UnknownPacketId(9)), vec![])
    );
    // §3.6.2.1: PUBREL 0x92 Packet Identifier not found.
    let want = vec![Packet::PubRel(Ack::with_reason(
        9,
        reason::PACKET_IDENTIFIER_NOT_FOUND,
    ))];
    assert_eq!(
        pubrec(&mut s, 9, reason::SUCCESS, now),
        (Err(AckError::UnknownPacketId(9)), want)
    );
}

#[test]
fn acknowledgements_of_the_wrong_kind_are_errors_and_change_nothing() {
    let now = Instant::now();
    let mut s = SessionState::new(config(4, 10));
    send(&mut s, delivery("a", Q1, now), now);
    send(&mut s, delivery("b", Q2, now), now);
    assert_eq!(
        pubrec(&mut s, 1, reason::SUCCESS, now),
        (Err(AckError::WrongStage(1)), vec![])
    );
    assert_eq!(
        pubcomp(&mut s, 1, now),
        (Err(AckError::WrongStage(1)), vec![])
    );
    assert_eq!(
        puback(&mut s, 2, now),
        (Err(AckError::WrongStage(2)), vec![])
    );
    assert_eq!(
        pubcomp(&mut s, 2, now),
        (Err(AckError::WrongStage(2)), vec![])
    );
    assert_eq!(
        pubrec(&mut s, 2, reason::SUCCESS, now),
        (Ok(()), vec![pubrel(2)])
    );
    assert_eq!(
        puback(&mut s, 2, now),
        (Err(AckError::WrongStage(2)), vec![])
    );
    assert_eq!(s.inflight_len(), 2);
    // The originals still complete normally.
    assert_eq!(puback(&mut s, 1, now), (Ok(()), vec![]));
    assert_eq!(pubcomp(&mut s, 2, now), (Ok(()), vec![]));
}

// ---- resume ------------------------------------------------------------------

#[test]
fn resume_resends_publishes_with_dup_and_pubrels_in_original_order() {
    // [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP set, [MQTT-3.3.1-1]) and
    // PUBREL resent; [MQTT-4.6.0-1] in the order first sent.
    let now = Instant::now();
    let mut s = SessionState::new(config(3, 10));
    for (tag, q) in [("a", Q1), ("b", Q2), ("c", Q2), ("d", Q1)] {
        send(&mut s, delivery(tag, q, now), now);
    }
    assert_eq!(
        pubrec(&mut s, 2, reason::SUCCESS, now),
        (Ok(()), vec![pubrel(2)])
    );
    let want = vec![
        publish("a", Q1, 1, true),
        pubrel(2),
        publish("c", Q2, 3, true),
    ];
    assert_eq!(resume(&mut s, now), want);
    // Resending changes nothing: the same again, then the queue moves on.
    assert_eq!(resume(&mut s, now), want);
    assert_eq!(puback(&mut s, 1, now).1, vec![publish("d", Q1, 4, false)]);
}

#[test]
fn resume_order_is_send_order_not_packet_id_order() {
    // Ids wrap: 65535 is sent before 1.
    let now = Instant::now();
    let mut s = SessionState::new(config(3, 10));
    s.next_packet_id = u16::MAX;
    assert_eq!(
        send(&mut s, delivery("a", Q1, now), now),
        vec![publish("a", Q1, u16::MAX, false)]
    );
    assert_eq!(
        send(&mut s, delivery("b", Q2, now), now),
        vec![publish("b", Q2, 1, false)]
    );
    assert_eq!(
        send(&mut s, delivery("c", Q1, now), now),
        vec![publish("c", Q1, 2, false)]
    );
    assert_eq!(
        pubrec(&mut s, 1, reason::SUCCESS, now),
        (Ok(()), vec![pubrel(1)])
    );
    let want = vec![
        publish("a", Q1, u16::MAX, true),
        pubrel(1),
        publish("c", Q1, 2, true),
    ];
    assert_eq!(resume(&mut s, now), want);
}

#[test]
fn resume_resends_inflight_messages_even_after_they_expired() {
    // [MQTT-4.3.3-7] no expiry once a PUBLISH was sent ([MQTT-3.3.2-5]
    // drops only copies not yet sent). The interval sent is the time left.
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    send(&mut s, delivery_at("a", Q1, Some(5), now), now);
    let later = now + Duration::from_secs(10);
    let mut want = Publish {
        dup: true,
        qos: Q1,
        topic: "t".into(),
        packet_id: 1,
        payload: Bytes::from_static(b"a"),
        ..Publish::default()
    };
    want.properties.message_expiry_interval = Some(0);
    assert_eq!(resume(&mut s, later), vec![Packet::Publish(want)]);
    assert_eq!(s.stats, SessionStats::default());
}

// ---- offline queue -----------------------------------------------------------

#[test]
fn offline_deliveries_are_queued_and_sent_in_order_on_resume() {
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    let mut out = Vec::new();
    for (tag, q) in [("a", Q1), ("b", Q0), ("c", Q2), ("d", Q1)] {
        s.deliver(delivery(tag, q, now), false, now, &mut out);
    }
    assert_eq!(out, vec![]);
    assert_eq!((s.inflight_len(), s.mqueue_len()), (0, 4));
    // QoS 0 takes no window slot: a, b, c fit a window of 2.
    let want = vec![
        publish("a", Q1, 1, false),
        publish("b", Q0, 0, false),
        publish("c", Q2, 2, false),
    ];
    assert_eq!(resume(&mut s, now), want);
    assert_eq!((s.inflight_len(), s.mqueue_len()), (2, 1));
}

#[test]
fn offline_qos0_is_dropped_and_counted_unless_stored() {
    let now = Instant::now();
    let mut s = SessionState::new(SessionConfig {
        mqueue_store_qos0: false,
        ..config(2, 10)
    });
    let mut out = Vec::new();
    s.deliver(delivery("a", Q0, now), false, now, &mut out);
    s.deliver(delivery("b", Q1, now), false, now, &mut out);
    assert_eq!(
        s.stats,
        SessionStats {
            dropped_qos0_offline: 1,
            ..SessionStats::default()
        }
    );
    assert_eq!(resume(&mut s, now), vec![publish("b", Q1, 1, false)]);
    // Online QoS 0 is still sent.
    assert_eq!(
        send(&mut s, delivery("c", Q0, now), now),
        vec![publish("c", Q0, 0, false)]
    );
}

#[test]
fn full_queue_drops_the_oldest_and_counts_it() {
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 2));
    let mut out = Vec::new();
    for tag in ["a", "b", "c", "d"] {
        s.deliver(delivery(tag, Q1, now), false, now, &mut out);
    }
    assert_eq!(s.mqueue_len(), 2);
    assert_eq!(
        s.stats,
        SessionStats {
            dropped_queue_full: 2,
            ..SessionStats::default()
        }
    );
    assert_eq!(resume(&mut s, now), vec![publish("c", Q1, 1, false)]);
    assert_eq!(puback(&mut s, 1, now).1, vec![publish("d", Q1, 2, false)]);
}

#[test]
fn full_queue_behind_a_full_window_drops_the_oldest_too() {
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 1));
    send(&mut s, delivery("a", Q1, now), now);
    send(&mut s, delivery("b", Q1, now), now);
    send(&mut s, delivery("c", Q1, now), now);
    assert_eq!(s.stats.dropped_queue_full, 1);
    assert_eq!(puback(&mut s, 1, now).1, vec![publish("c", Q1, 2, false)]);
}

#[test]
fn zero_length_queue_drops_everything_that_waits() {
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 0));
    let mut out = Vec::new();
    s.deliver(delivery("a", Q1, now), false, now, &mut out);
    send(&mut s, delivery("b", Q1, now), now);
    send(&mut s, delivery("c", Q1, now), now);
    assert_eq!(s.stats.dropped_queue_full, 2);
    assert_eq!((s.inflight_len(), s.mqueue_len()), (1, 0));
}

// ---- message expiry ------------------------------------------------------------

#[test]
fn expired_messages_are_dropped_and_counted() {
    // [MQTT-3.3.2-5] not delivered once the interval has passed.
    let t0 = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    let mut out = Vec::new();
    // Expired on arrival, online or offline.
    assert_eq!(
        send(
            &mut s,
            delivery_at("a", Q0, Some(1), t0),
            t0 + Duration::from_secs(1)
        ),
        vec![]
    );
    s.deliver(
        delivery_at("b", Q1, Some(1), t0),
        false,
        t0 + Duration::from_secs(2),
        &mut out,
    );
    assert_eq!(s.stats.dropped_expired, 2);
    // Expired while queued.
    s.deliver(delivery_at("c", Q1, Some(5), t0), false, t0, &mut out);
    s.deliver(delivery_at("d", Q2, Some(60), t0), false, t0, &mut out);
    assert_eq!(out, vec![]);
    let at = t0 + Duration::from_secs(20);
    let mut want = Publish {
        qos: Q2,
        topic: "t".into(),
        packet_id: 1,
        payload: Bytes::from_static(b"d"),
        ..Publish::default()
    };
    want.properties.message_expiry_interval = Some(40);
    assert_eq!(resume(&mut s, at), vec![Packet::Publish(want)]);
    assert_eq!(
        s.stats,
        SessionStats {
            dropped_expired: 3,
            ..SessionStats::default()
        }
    );
}

#[test]
fn outgoing_expiry_interval_is_the_time_left() {
    // [MQTT-3.3.2-6] the interval sent is the received one minus the time
    // the message waited in the server.
    let t0 = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    let out = send(
        &mut s,
        delivery_at("a", Q0, Some(60), t0),
        t0 + Duration::from_millis(20_500),
    );
    let Packet::Publish(p) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(p.properties.message_expiry_interval, Some(39));
    let out = send(&mut s, delivery_at("b", Q1, Some(60), t0), t0);
    let Packet::Publish(p) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(p.properties.message_expiry_interval, Some(60));
    // Without an interval, none is sent.
    let out = send(&mut s, delivery("c", Q0, t0), t0);
    let Packet::Publish(p) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(p.properties.message_expiry_interval, None);
}

// ---- receive maximum -------------------------------------------------------------

#[test]
fn client_receive_maximum_shrinks_the_window() {
    // [MQTT-3.3.4-9] no more unacknowledged QoS 1/2 than Receive Maximum.
    let now = Instant::now();
    let mut s = SessionState::new(config(10, 10));
    s.set_client_receive_maximum(2);
    for tag in ["a", "b", "c"] {
        send(&mut s, delivery(tag, Q1, now), now);
    }
    assert_eq!((s.inflight_len(), s.mqueue_len()), (2, 1));
    // A larger Receive Maximum never exceeds our own cap.
    s.set_client_receive_maximum(u16::MAX);
    assert_eq!(s.window, 10);
    // 0 is a protocol error the channel refuses; never a zero window here.
    s.set_client_receive_maximum(0);
    assert_eq!(s.window, 1);
    assert_eq!(SessionState::new(config(0, 10)).window, 1);
}

#[test]
fn window_shrunk_on_reconnect_keeps_inflight_and_sends_nothing_new() {
    let now = Instant::now();
    let mut s = SessionState::new(config(3, 10));
    for tag in ["a", "b", "c", "d"] {
        send(&mut s, delivery(tag, Q1, now), now);
    }
    s.set_client_receive_maximum(1);
    let want = vec![
        publish("a", Q1, 1, true),
        publish("b", Q1, 2, true),
        publish("c", Q1, 3, true),
    ];
    assert_eq!(resume(&mut s, now), want);
    assert_eq!(puback(&mut s, 1, now).1, vec![]);
    assert_eq!(puback(&mut s, 2, now).1, vec![]);
    assert_eq!(puback(&mut s, 3, now).1, vec![publish("d", Q1, 4, false)]);
}

// ---- packet ids -------------------------------------------------------------------

#[test]
fn packet_ids_wrap_past_65535_and_skip_zero() {
    // [MQTT-2.2.1-4] non-zero packet identifiers.
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 10));
    let d = delivery("x", Q1, now);
    for expected in (1..=u16::MAX).chain([1, 2]) {
        let mut out = Vec::new();
        s.deliver(d.clone(), true, now, &mut out);
        let [Packet::Publish(p)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(p.packet_id, expected);
        assert_eq!(s.puback(expected, now, &mut out), Ok(()));
    }
}

#[test]
fn packet_ids_in_use_are_skipped_when_wrapping() {
    // [MQTT-2.2.1-4] an id is not reused while its exchange is unfinished.
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    send(&mut s, delivery("held", Q2, now), now);
    let d = delivery("x", Q1, now);
    for expected in 2..=u16::MAX {
        let mut out = Vec::new();
        s.deliver(d.clone(), true, now, &mut out);
        let [Packet::Publish(p)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(p.packet_id, expected);
        assert_eq!(s.puback(expected, now, &mut out), Ok(()));
    }
    assert_eq!(send(&mut s, d, now), vec![publish("x", Q1, 2, false)]);
}

// ---- subscriptions --------------------------------------------------------------

#[test]
fn subscribe_replaces_and_unsubscribe_removes() {
    // [MQTT-3.8.4-3] a subscription to the same filter replaces the old one.
    let mut s = SessionState::new(SessionConfig::default());
    let sub = |q: QoS, identifier: Option<u32>| Subscription {
        options: SubscriptionOptions {
            qos: q,
            ..SubscriptionOptions::default()
        },
        identifier,
    };
    assert!(!s.subscribe("a/#".into(), sub(Q0, None)));
    assert!(s.subscribe("a/#".into(), sub(Q2, Some(3))));
    assert_eq!(s.subscriptions().len(), 1);
    assert_eq!(s.subscriptions().get("a/#"), Some(&sub(Q2, Some(3))));
    assert!(s.unsubscribe("a/#"));
    assert!(!s.unsubscribe("a/#"));
    assert!(s.subscriptions().is_empty());
}

// ---- the store journal (persistent sessions) -------------------------------

fn stored(tag: &str, qos: QoS, seq: u64, now: Instant) -> Delivery {
    Delivery {
        stored: Some(seq),
        ..delivery(tag, qos, now)
    }
}

fn journal(s: &mut SessionState) -> Vec<StoreOp> {
    let mut j = Vec::new();
    s.take_journal(&mut j);
    j
}

#[test]
fn unstored_deliveries_journal_nothing() {
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    send(&mut s, delivery("a", Q1, now), now);
    puback(&mut s, 1, now).0.unwrap();
    assert_eq!(journal(&mut s), vec![]);
}

#[test]
fn qos1_stored_delivery_is_sent_then_done_on_puback() {
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    send(&mut s, stored("a", Q1, 7, now), now);
    assert_eq!(
        journal(&mut s),
        vec![StoreOp::Sent {
            seq: 7,
            packet_id: 1
        }]
    );
    puback(&mut s, 1, now).0.unwrap();
    assert_eq!(journal(&mut s), vec![StoreOp::Done(7)]);
}

#[test]
fn qos2_stored_delivery_is_released_before_the_pubrel_then_done() {
    let now = Instant::now();
    let mut s = SessionState::new(config(2, 10));
    send(&mut s, stored("a", Q2, 3, now), now);
    journal(&mut s);
    let (r, out) = pubrec(&mut s, 1, 0, now);
    r.unwrap();
    assert_eq!(out, vec![pubrel(1)]);
    assert_eq!(
        journal(&mut s),
        vec![StoreOp::Released {
            seq: 3,
            packet_id: 1
        }]
    );
    pubcomp(&mut s, 1, now).0.unwrap();
    assert_eq!(journal(&mut s), vec![StoreOp::Done(3)]);
}

#[test]
fn refused_qos2_and_qos0_and_expired_and_overflow_are_done() {
    let now = Instant::now();
    let mut s = SessionState::new(config(1, 1));
    // QoS 0 online: written, done.
    send(&mut s, stored("z", Q0, 1, now), now);
    assert_eq!(journal(&mut s), vec![StoreOp::Done(1)]);
    // QoS 2 refused by the client (PUBREC >= 0x80): done.
    send(&mut s, stored("a", Q2, 2, now), now);
    pubrec(&mut s, 1, 0x80, now).0.unwrap();
    assert_eq!(
        journal(&mut s),
        vec![
            StoreOp::Sent {
                seq: 2,
                packet_id: 1
            },
            StoreOp::Done(2)
        ]
    );
    // Expired before delivery: done.
    let mut out = Vec::new();
    let old = now - Duration::from_secs(10);
    s.deliver(
        Delivery {
            stored: Some(4),
            ..delivery_at("e", Q1, Some(1), old)
        },
        true,
        now,
        &mut out,
    );
    assert_eq!(journal(&mut s), vec![StoreOp::Done(4)]);
    // Offline queue of one: the oldest is dropped, done.
    s.deliver(stored("b", Q1, 5, now), false, now, &mut out);
    s.deliver(stored("c", Q1, 6, now), false, now, &mut out);
    assert_eq!(journal(&mut s), vec![StoreOp::Done(5)]);
    assert_eq!(s.mqueue_room(), 0);
}

#[test]
fn restored_inflight_is_resent_with_dup_and_its_original_id_in_order() {
    let now = Instant::now();
    let mut s = SessionState::new(config(4, 10));
    s.restore_inflight(9, stored("a", Q1, 1, now), false);
    s.restore_inflight(4, stored("b", Q2, 2, now), true);
    s.deliver(stored("c", Q1, 3, now), false, now, &mut Vec::new());
    assert_eq!(journal(&mut s), vec![]);
    assert_eq!(
        resume(&mut s, now),
        vec![
            publish("a", Q1, 9, true),
            pubrel(4),
            // A new id, not one in use.
            publish("c", Q1, 1, false),
        ]
    );
    puback(&mut s, 9, now).0.unwrap();
    pubcomp(&mut s, 4, now).0.unwrap();
    assert_eq!(
        journal(&mut s),
        vec![
            StoreOp::Sent {
                seq: 3,
                packet_id: 1
            },
            StoreOp::Done(1),
            StoreOp::Done(2)
        ]
    );
}

// ---- handover to another node ---------------------------------------------

#[test]
fn take_all_returns_inflight_in_send_order_then_the_queue() {
    let now = Instant::now();
    let mut s = SessionState::new(config(3, 10));
    for tag in ["a", "b", "c", "d", "e"] {
        let qos = if tag == "b" { Q2 } else { Q1 };
        send(&mut s, delivery(tag, qos, now), now);
    }
    // b (QoS 2, id 2) is released: only its PUBREL is owed.
    assert_eq!(pubrec(&mut s, 2, 0, now).0, Ok(()));
    let (inflight, queued) = s.take_all();
    let ids: Vec<(u16, Option<String>)> = inflight
        .iter()
        .map(|(id, d)| {
            let tag = d
                .as_ref()
                .map(|d| String::from_utf8(d.message.payload.to_vec()).unwrap());
            (*id, tag)
        })
        .collect();
    assert_eq!(
        ids,
        vec![(1, Some("a".into())), (2, None), (3, Some("c".into()))]
    );
    let tags: Vec<&[u8]> = queued.iter().map(|d| &d.message.payload[..]).collect();
    assert_eq!(tags, vec![&b"d"[..], &b"e"[..]]);
    assert_eq!((s.inflight_len(), s.mqueue_len()), (0, 0));
    assert!(resume(&mut s, now).is_empty());
}
