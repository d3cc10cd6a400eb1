//! Property test: random deliver / acknowledge / disconnect / resume / clock
//! sequences against a model of what the client has seen.
//!
//! After every operation:
//! - the inflight ids are exactly those the client was sent and has not
//!   completed, none is 0, none is reused while in flight [MQTT-2.2.1-4];
//! - no new QoS 1/2 PUBLISH is sent beyond the window [MQTT-3.3.4-9], and the
//!   window never exceeds our cap;
//! - first transmissions of QoS 1/2 messages come in the order the messages
//!   were accepted [MQTT-4.6.0-5], each at most once;
//! - a resume resends every inflight entry, PUBLISH with DUP or PUBREL, in
//!   the order first sent, before anything new [MQTT-4.4.0-1];
//! - nothing is lost: accepted = sent + queued + counted as dropped.
//!
//! At the end the client comes back and acknowledges everything: the queue
//! drains and the conservation law holds with nothing left queued.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// A message for the session; `expiry` seconds of Message Expiry.
    Deliver {
        qos: QoS,
        expiry: Option<u8>,
    },
    /// The client acknowledges the `pick`-th inflight entry correctly;
    /// a QoS 2 PUBLISH is refused with 0x80 when `fail`.
    Ack {
        pick: usize,
        fail: bool,
    },
    /// The client acknowledges the `pick`-th inflight entry with the wrong
    /// kind of acknowledgement.
    WrongAck {
        pick: usize,
    },
    /// An acknowledgement for an id that is not in flight.
    UnknownAck {
        id: u16,
        kind: u8,
    },
    Disconnect,
    /// A connection attaches with this Receive Maximum. Deliveries are
    /// online from now on, even before the session resumes: in the session
    /// actor, `Resume` is a later message.
    Attach {
        receive_maximum: u16,
    },
    /// The attached connection is ready: resend and fill.
    Resume,
    Tick {
        secs: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let qos = prop_oneof![Just(Q0), Just(Q1), Just(Q2)];
    prop_oneof![
        5 => (qos, proptest::option::weighted(0.2, 0u8..4)).prop_map(|(qos, expiry)| Op::Deliver { qos, expiry }),
        4 => (any::<usize>(), proptest::bool::weighted(0.2)).prop_map(|(pick, fail)| Op::Ack { pick, fail }),
        1 => any::<usize>().prop_map(|pick| Op::WrongAck { pick }),
        1 => (any::<u16>(), 0u8..3).prop_map(|(id, kind)| Op::UnknownAck { id, kind }),
        1 => Just(Op::Disconnect),
        1 => (1u16..8).prop_map(|receive_maximum| Op::Attach { receive_maximum }),
        1 => Just(Op::Resume),
        1 => (0u8..3).prop_map(|secs| Op::Tick { secs }),
    ]
}

/// One message the client holds a packet id for.
#[derive(Debug, Clone)]
struct Held {
    tag: u64,
    qos: QoS,
    released: bool,
}

struct Harness {
    s: SessionState,
    max_inflight: u16,
    now: Instant,
    online: bool,
    next_tag: u64,
    /// Tags the client received a first transmission of.
    sent: HashSet<u64>,
    /// Tag of the last first-transmitted QoS 1/2 message.
    last_sent: Option<u64>,
    /// What the client holds, by packet id.
    held: HashMap<u16, Held>,
}

fn tag_of(p: &Publish) -> u64 {
    u64::from_be_bytes(p.payload.as_ref().try_into().expect("8-byte tag"))
}

impl Harness {
    fn new(config: SessionConfig, first_id: u16) -> Harness {
        let max_inflight = config.max_inflight;
        let mut s = SessionState::new(config);
        s.next_packet_id = first_id;
        Harness {
            s,
            max_inflight,
            now: Instant::now(),
            online: true,
            next_tag: 0,
            sent: HashSet::new(),
            last_sent: None,
            held: HashMap::new(),
        }
    }

    fn run(&mut self, op: &Op) {
        let mut out = Vec::new();
        match *op {
            Op::Deliver { qos, expiry } => {
                let tag = self.next_tag;
                self.next_tag += 1;
                let mut d = delivery_at("", qos, expiry.map(u32::from), self.now);
                Arc::make_mut(&mut d.message).payload = Bytes::copy_from_slice(&tag.to_be_bytes());
                self.s.deliver(d, self.online, self.now, &mut out);
                self.check_new(&out);
            }
            Op::Ack { pick, fail } => self.ack(pick, fail),
            Op::WrongAck { pick } => self.wrong_ack(pick),
            Op::UnknownAck { id, kind } => self.unknown_ack(id, kind),
            Op::Disconnect => self.online = false,
            Op::Attach { receive_maximum } => {
                self.online = true;
                self.s.set_client_receive_maximum(receive_maximum);
            }
            Op::Resume => self.resume(),
            Op::Tick { secs } => self.now += Duration::from_secs(u64::from(secs)),
        }
        self.check_state();
    }

    /// Inflight ids in the order the client first received them.
    fn held_in_order(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.held.keys().copied().collect();
        ids.sort_by_key(|id| self.held[id].tag);
        ids
    }

    fn ack(&mut self, pick: usize, fail: bool) {
        let ids = self.held_in_order();
        if !self.online || ids.is_empty() {
            return;
        }
        let id = ids[pick % ids.len()];
        let h = self.held[&id].clone();
        let mut out = Vec::new();
        match (h.qos, h.released) {
            (QoS::AtLeastOnce, _) => {
                self.held.remove(&id);
                assert_eq!(self.s.puback(id, self.now, &mut out), Ok(()));
            }
            (_, false) if fail => {
                self.held.remove(&id);
                assert_eq!(
                    self.s
                        .pubrec(id, reason::UNSPECIFIED_ERROR, self.now, &mut out),
                    Ok(())
                );
            }
            (_, false) => {
                self.held.get_mut(&id).expect("held").released = true;
                assert_eq!(
                    self.s.pubrec(id, reason::SUCCESS, self.now, &mut out),
                    Ok(())
                );
                // PUBREL and nothing else: the slot is still taken.
                assert_eq!(out, vec![pubrel(id)]);
                return;
            }
            (_, true) => {
                self.held.remove(&id);
                assert_eq!(self.s.pubcomp(id, self.now, &mut out), Ok(()));
            }
        }
        self.check_new(&out);
    }

    fn wrong_ack(&mut self, pick: usize) {
        let ids = self.held_in_order();
        if ids.is_empty() {
            return;
        }
        let id = ids[pick % ids.len()];
        let mut out = Vec::new();
        let result = match (self.held[&id].qos, self.held[&id].released) {
            (QoS::AtLeastOnce, _) => self.s.pubcomp(id, self.now, &mut out),
            _ => self.s.puback(id, self.now, &mut out),
        };
        assert_eq!(result, Err(AckError::WrongStage(id)));
        assert_eq!(out, vec![]);
    }

    fn unknown_ack(&mut self, id: u16, kind: u8) {
        if self.held.contains_key(&id) {
            return;
        }
        let mut out = Vec::new();
        let result = match kind {
            0 => self.s.puback(id, self.now, &mut out),
            1 => self.s.pubcomp(id, self.now, &mut out),
            _ => {
                let r = self.s.pubrec(id, reason::SUCCESS, self.now, &mut out);
                assert_eq!(
                    out,
                    vec![Packet::PubRel(Ack::with_reason(
                        id,
                        reason::PACKET_IDENTIFIER_NOT_FOUND
                    ))]
                );
                out.clear();
                r
            }
        };
        assert_eq!(result, Err(AckError::UnknownPacketId(id)));
        assert_eq!(out, vec![]);
    }

    fn resume(&mut self) {
        if !self.online {
            return;
        }
        let mut out = Vec::new();
        self.s.resume(self.now, &mut out);
        // Every held entry first, in first-send order, with its id.
        let order = self.held_in_order();
        assert!(
            out.len() >= order.len(),
            "resume sent {out:?}, client holds {:?}",
            self.held
        );
        for (packet, id) in out.iter().zip(&order) {
            let h = &self.held[id];
            match packet {
                Packet::PubRel(a) => {
                    assert!(h.released && *a == Ack::new(*id), "{packet:?} for {h:?}")
                }
                Packet::Publish(p) => {
                    assert!(
                        !h.released
                            && p.dup
                            && p.packet_id == *id
                            && p.qos == h.qos
                            && tag_of(p) == h.tag,
                        "{p:?} for {h:?}"
                    )
                }
                other => panic!("resume sent {other:?}"),
            }
        }
        self.check_new(&out[order.len()..]);
    }

    /// Packets that must all be first transmissions.
    fn check_new(&mut self, out: &[Packet]) {
        let mut new_window_sends = false;
        for packet in out {
            let Packet::Publish(p) = packet else {
                panic!("unexpected {packet:?}")
            };
            let tag = tag_of(p);
            assert!(!p.dup, "{p:?}");
            assert!(self.sent.insert(tag), "tag {tag} sent twice");
            if p.qos == QoS::AtMostOnce {
                assert_eq!(p.packet_id, 0);
                continue;
            }
            assert_ne!(p.packet_id, 0);
            assert!(
                self.last_sent < Some(tag),
                "tag {tag} sent after {:?}",
                self.last_sent
            );
            self.last_sent = Some(tag);
            let prev = self.held.insert(
                p.packet_id,
                Held {
                    tag,
                    qos: p.qos,
                    released: false,
                },
            );
            assert!(
                prev.is_none(),
                "packet id {} reused while in flight",
                p.packet_id
            );
            new_window_sends = true;
        }
        if new_window_sends {
            assert!(
                self.s.inflight_len() <= usize::from(self.s.window),
                "{} inflight, window {}",
                self.s.inflight_len(),
                self.s.window
            );
        }
    }

    fn dropped(&self) -> u64 {
        let st = &self.s.stats;
        st.dropped_queue_full + st.dropped_expired + st.dropped_qos0_offline
    }

    fn check_state(&self) {
        let ids: HashSet<u16> = self.s.inflight.keys().copied().collect();
        assert_eq!(ids, self.held.keys().copied().collect::<HashSet<u16>>());
        assert!(!ids.contains(&0));
        assert!(self.s.inflight_len() <= usize::from(self.max_inflight.max(1)));
        assert!(self.s.window <= self.max_inflight.max(1));
        let accounted = self.sent.len() as u64 + self.s.mqueue_len() as u64 + self.dropped();
        assert_eq!(
            self.next_tag, accounted,
            "accepted != sent + queued + dropped"
        );
    }

    /// The client comes back and acknowledges everything.
    fn drain(&mut self) {
        self.run(&Op::Attach {
            receive_maximum: u16::MAX,
        });
        self.run(&Op::Resume);
        let mut rounds = 0;
        while !self.held.is_empty() {
            rounds += 1;
            assert!(rounds < 10_000, "drain does not terminate");
            self.run(&Op::Ack {
                pick: 0,
                fail: false,
            });
        }
        assert_eq!((self.s.inflight_len(), self.s.mqueue_len()), (0, 0));
        assert_eq!(self.next_tag, self.sent.len() as u64 + self.dropped());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn window_ids_order_and_conservation_hold(
        max_inflight in 1u16..6,
        max_mqueue_len in 0usize..7,
        mqueue_store_qos0 in any::<bool>(),
        first_id in prop_oneof![Just(1u16), 65_530u16..=65_535],
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let config = SessionConfig { max_inflight, max_mqueue_len, mqueue_store_qos0 };
        let mut h = Harness::new(config, first_id);
        for op in &ops {
            h.run(op);
        }
        h.drain();
    }
}
